"""What this machine offers: a GPU to run on, the CPU's vendor and instruction sets, and the fast code path
of Paddle's bundled MKL. Embedding, serving and fine-tuning share these answers."""

import contextlib
import ctypes
import os

from .memory import keep_freed_memory

__all__ = ["MKL_CPU_TYPE_ENV", "available_cpus", "cpu_execution", "cpu_supports_bf16", "cpuinfo_field",
           "gpu_available", "math_threads", "select_fast_mkl_path"]

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


def available_cpus():
    """How many CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_supports_bf16():
    """Whether this CPU has native bfloat16 instructions (``avx512_bf16`` or ``amx_bf16``) and Paddle has oneDNN.

    Without them oneDNN would emulate bfloat16, slower than fp32.
    """
    import paddle

    if not paddle.base.core.is_compiled_with_onednn():
        return False
    flags = cpuinfo_field("flags")
    if flags is not None:
        return bool(set(flags.split()) & {"avx512_bf16", "amx_bf16"})
    return bool(paddle.base.core.supports_bfloat16_fast_performance())


def math_threads():
    """Threads for math on the CPU: ``OMP_NUM_THREADS`` when above 1, else :func:`available_cpus` shared
    among the processes that ``paddle.distributed.launch`` started on this node (``PADDLE_LOCAL_SIZE``).

    Importing Paddle sets ``OMP_NUM_THREADS=1`` unless it was set higher, so 1 means "not chosen";
    limit the CPUs with ``taskset`` or a cgroup instead. ``kernels/threads.h`` is the same rule.
    """
    chosen = _environ_int("OMP_NUM_THREADS", 1)
    return chosen if chosen > 1 else max(1, available_cpus() // max(1, _environ_int("PADDLE_LOCAL_SIZE", 1)))


@contextlib.contextmanager
def cpu_execution():
    """Runs the static executors inside it on the calling thread, with :func:`math_threads` for MKL
    and oneDNN, Paddle's own OpenMP loops on one thread, and the memory a step frees kept for the next
    step (:func:`.memory.keep_freed_memory`). Dynamic-mode training loops gain from it too, and there
    a transpose or reshape makes a contiguous tensor rather than a strided view
    (``FLAGS_use_stride_kernel`` off): the products and gradients that read the views copied them
    element by element, on one thread (a 32-token BERT-Large step: 4.2 s with views, 3.7 s without).

    Paddle's executor otherwise runs independent ops side by side on its own threads while every
    matrix product wants all the cores, and its MKL on one thread: a BERT-Large training step on
    2 cores took 8.1 s that way and 7.4 s inside this. Paddle's OpenMP loops (libgomp) and its math
    libraries (libiomp5) are two thread pools; with ``OMP_NUM_THREADS`` above 1, libgomp's threads
    waited for cores that libiomp5's threads spin on after each product (the embedding table's
    gradient: 60 ms on one thread, 330 ms on two). On exit the flags are put back, and both
    thread counts return to ``OMP_NUM_THREADS`` (what Paddle set at import).
    """
    import paddle

    flags = {"FLAGS_new_executor_serial_run": True, "FLAGS_use_stride_kernel": False}
    saved = paddle.get_flags(list(flags))
    paddle.set_flags(flags)
    paddle.base.core.set_num_threads(math_threads())
    gomp_threads = _set_gomp_threads(1)
    try:
        with keep_freed_memory():
            yield
    finally:
        paddle.set_flags(saved)
        paddle.base.core.set_num_threads(max(1, _environ_int("OMP_NUM_THREADS", 1)))
        if gomp_threads is not None:
            _set_gomp_threads(gomp_threads)


def _set_gomp_threads(count):
    """Sets libgomp's thread count for the calling thread, where the process has loaded libgomp;
    returns the count before, or None without libgomp."""
    try:
        gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return None
    before = gomp.omp_get_max_threads()
    gomp.omp_set_num_threads(count)
    return before


def _environ_int(name, default):
    """The integer in environment variable ``name``; ``default`` where it is unset or not an integer."""
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default
