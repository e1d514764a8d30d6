"""The machine's side of the benchmarks: its fp32 GEMM peak (numpy, in a child process), the CPU time other
processes use during a timed block, and this process's RSS (Linux)."""

import json
import os
import subprocess
import sys
import time

_GEMM_PROBE = r"""
import json, sys, time, numpy as np
n, reps = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.random((n, n), dtype=np.float32); b = rng.random((n, n), dtype=np.float32)
a @ b
best = min((lambda t0: (a @ b, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(reps))
try:
    from threadpoolctl import threadpool_info
    kernels = ",".join(sorted({str(i.get("architecture")) for i in threadpool_info() if i.get("user_api") == "blas"}))
except Exception:
    kernels = "?"
print(json.dumps({"gflops": 2 * n ** 3 / best / 1e9, "kernels": kernels}))
"""


def gemm_probe(threads, unset_coretype=False, n=4096, reps=6):
    """numpy's float32 GEMM rate (GFLOP/s) in a child process with ``threads`` BLAS threads."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    if unset_coretype:
        env.pop("OPENBLAS_CORETYPE", None)
    out = subprocess.run([sys.executable, "-c", _GEMM_PROBE, str(n), str(reps)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def gemm_peak(threads, quick):
    """``(peak GFLOP/s, description, [(GFLOP/s, what) per probe])`` from the numpy probes (see the module
    docstring)."""
    n, reps = (1024, 5) if quick else (4096, 6)
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    probes = []
    as_set = gemm_probe(threads, n=n, reps=reps)
    label = f"OPENBLAS_CORETYPE={coretype}" if coretype else "environment as is"
    probes.append((as_set["gflops"], f"{label} ({as_set['kernels']} kernels)"))
    if coretype:
        unset = gemm_probe(threads, unset_coretype=True, n=n, reps=reps)
        probes.append((unset["gflops"], f"OPENBLAS_CORETYPE unset ({unset['kernels']} kernels)"))
    peak = max(p for p, _ in probes)
    detail = "; ".join(f"{p:.0f} GFLOP/s with {what}" for p, what in probes)
    return peak, f"numpy float32 {n}x{n}x{n} matmul, {threads} threads: {detail}", probes


class CpuWatch:
    """Wall time of a block, and the share of all CPUs that other processes used meanwhile (Linux)."""

    def __enter__(self):
        self._busy0, self._own0, self._t0 = _total_busy_ticks(), _own_ticks(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        busy, own = _total_busy_ticks(), _own_ticks()
        if None in (busy, own, self._busy0, self._own0):
            self.foreign = float("nan")
        else:
            ticks = (busy - self._busy0) - (own - self._own0)
            self.foreign = max(0.0, ticks / os.sysconf("SC_CLK_TCK") / (self.seconds * (os.cpu_count() or 1)))
        return False


def _total_busy_ticks():
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values) - values[3] - values[4]  # All but idle and iowait.
    except (OSError, ValueError, IndexError):
        return None


def _own_ticks():
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime of this process.
    except (OSError, ValueError, IndexError):
        return None


def rss_gb():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (OSError, ValueError):
        return float("nan")
