"""What this machine offers: a GPU to run on, the CPU's vendor and instruction sets, and the fast code path
of Paddle's bundled MKL. Embedding, serving and fine-tuning share these answers."""

import os

__all__ = ["MKL_CPU_TYPE_ENV", "cpuinfo_field", "gpu_available", "select_fast_mkl_path"]

#: Intel MKL's switch for the code path it runs; Paddle's bundled MKL honours it (newer MKLs ignore it).
MKL_CPU_TYPE_ENV = "MKL_DEBUG_CPU_TYPE"


def gpu_available():
    """Whether Paddle was built with CUDA and sees at least one GPU."""
    import paddle

    if not paddle.is_compiled_with_cuda():
        return False
    try:
        return paddle.device.cuda.device_count() > 0
    except Exception:  # noqa: BLE001 -- a CUDA build on a machine without a driver.
        return False


def cpuinfo_field(name, path="/proc/cpuinfo"):
    """The value of the first ``name`` line of ``/proc/cpuinfo`` (``"flags"``, ``"vendor_id"``), or None."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def select_fast_mkl_path(environ=os.environ, vendor=None):
    """On AMD CPUs, sets ``MKL_DEBUG_CPU_TYPE=5`` (MKL's AVX2 code path) unless it is set already.

    Paddle's static Executor and dynamic mode run matrix products on its bundled MKL, which on
    non-Intel CPUs picks its slowest, pre-AVX code path: a BERT training step ran 4.6x faster with
    the variable (``bench/bench_finetune.py``). MKL reads it at its first call, so the package sets it
    when imported. Intel CPUs are left alone (they would lose AVX-512). Returns whether it set it.
    """
    if MKL_CPU_TYPE_ENV in environ:
        return False
    if (vendor if vendor is not None else cpuinfo_field("vendor_id")) != "AuthenticAMD":
        return False
    environ[MKL_CPU_TYPE_ENV] = "5"
    return True
