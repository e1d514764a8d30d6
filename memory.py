"""How glibc's heap holds freed memory: returned to the OS at once, or kept for the next training step."""

import contextlib
import ctypes
import gc
import threading

__all__ = ["keep_freed_memory", "kept_heap_environment", "release_freed_memory"]

# mallopt(3) parameters, and the values glibc starts with.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_TOP_PAD: 128 * 1024, _M_MMAP_THRESHOLD: 128 * 1024}
# Inside keep_freed_memory(): blocks up to glibc's largest mmap threshold (32 MB, the size of
# BERT-Large's biggest weight matrix and of its [8, 128, 4096] activations) come from the heap, and
# the heap is never trimmed, so each step reuses the pages the step before faulted in.
_KEEPING = {_M_TRIM_THRESHOLD: 2**31 - 1, _M_TOP_PAD: 256 * 2**20, _M_MMAP_THRESHOLD: 32 * 2**20}
# glibc's environment variable for each mallopt parameter (read once, when a process starts).
_ENVIRONMENT_NAMES = {_M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_", _M_TOP_PAD: "MALLOC_TOP_PAD_",
                      _M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_"}

_lock = threading.Lock()
_depth = [0]


def _libc():
    """glibc's handle, or None on another C library."""
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_freed_memory():
    """Collects garbage, then asks glibc to return its free heap memory to the OS (``malloc_trim``).

    glibc keeps freed blocks under its mmap threshold (up to 32 MB, which every BERT-Large
    parameter is) for reuse, so gigabytes freed after an export or a fine-tuning task would
    otherwise stay in the process's RSS. Does nothing beyond ``gc.collect()`` without glibc.
    """
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def kept_heap_environment():
    """``{variable: value}`` that start a process with glibc's heap as :func:`keep_freed_memory` sets
    it, for other programs (e.g. a benchmark's torch peer) to run under the same settings."""
    return {_ENVIRONMENT_NAMES[parameter]: str(value) for parameter, value in _KEEPING.items()}


@contextlib.contextmanager
def keep_freed_memory():
    """Inside it, memory a training step frees stays in the process for the next step.

    By default glibc hands every block over 128 KB back to the OS when it is freed, and the next
    step faults the same gigabytes in again, zeroed page by page: a quarter of a BERT-Large step's
    CPU time went to the kernel that way (32 tokens, 2 cores). Inside this context glibc serves
    blocks up to 32 MB from its heap and keeps the heap, so peak RSS is unchanged and later steps
    fault nothing in. Nested uses share one setting; leaving the outermost puts glibc's defaults
    back and returns the free memory (:func:`release_freed_memory`). Without glibc it does nothing.
    """
    libc = _libc()
    with _lock:
        _depth[0] += 1
        if _depth[0] == 1 and libc is not None:
            for parameter, value in _KEEPING.items():
                libc.mallopt(parameter, value)
    try:
        yield
    finally:
        with _lock:
            _depth[0] -= 1
            outermost = _depth[0] == 0
            if outermost and libc is not None:
                for parameter, value in _DEFAULTS.items():
                    libc.mallopt(parameter, value)
        if outermost:
            release_freed_memory()
