"""The machine's side of the benchmarks: its fp32 GEMM peak (numpy, in a child process), oneDNN's GEMM rates at
a BERT layer's shapes (the ceiling for every runner), the CPU time other processes use during a timed block,
and this process's RSS (Linux)."""

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


_ONEDNN_PROBE = r"""
import ctypes, json, os, sys, time
import numpy as np
import paddle
rows, hidden, ffn, reps, bf16 = (int(v) for v in sys.argv[1:6])
lib = ctypes.CDLL(os.path.join(os.path.dirname(paddle.__file__), "libs", "libdnnl.so.3"))
I64, F, P, C = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_char
for fn in (lib.dnnl_sgemm, lib.dnnl_gemm_bf16bf16f32):
    fn.argtypes = [C, C, I64, I64, I64, F, P, I64, P, I64, F, P, I64]
rng = np.random.default_rng(0)
to_bf16 = lambda a: (a.view(np.uint32) >> 16).astype(np.uint16)
def rate(fn, convert):
    flops = seconds = 0.0
    for m, n, k, count in ((rows, hidden, hidden, 4), (rows, ffn, hidden, 1), (rows, hidden, ffn, 1)):
        a, b = convert(rng.random((m, k), dtype=np.float32)), convert(rng.random((k, n), dtype=np.float32))
        c = np.zeros((m, n), np.float32)
        args = (b"N", b"N", m, n, k, 1.0, a.ctypes.data, k, b.ctypes.data, n, 0.0, c.ctypes.data, n)
        fn(*args)
        best = min((lambda t0: (fn(*args), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(reps))
        flops, seconds = flops + 2.0 * m * n * k * count, seconds + best * count
    return flops / seconds / 1e9
out = {"fp32": rate(lib.dnnl_sgemm, lambda a: a)}
out["bf16"] = rate(lib.dnnl_gemm_bf16bf16f32, to_bf16) if bf16 else None
print(json.dumps(out))
"""


def onednn_gemm_rates(threads, rows, hidden, ffn, bf16, reps=5):
    """``{"fp32": GFLOP/s, "bf16": GFLOP/s or None}``: oneDNN's GEMMs (Paddle's ``libdnnl``) over one
    encoder layer's dense products at ``rows`` tokens (4 of ``hidden x hidden``, ``hidden -> ffn``,
    ``ffn -> hidden``), inputs and weights already in the product's type (bf16 only if ``bf16``), in a
    child process with ``threads`` threads. No runner's products can go faster on this CPU: a
    runner's real-token FLOP rate against these is how close it is to the ceiling."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", _ONEDNN_PROBE, str(rows), str(hidden), str(ffn), str(reps),
                          str(int(bf16))], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


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
