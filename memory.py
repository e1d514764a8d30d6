"""Handing freed memory back to the operating system, for the jobs that free gigabytes at once."""

import ctypes
import gc

__all__ = ["release_freed_memory"]


def release_freed_memory():
    """Collects garbage, then asks glibc to return its free heap memory to the OS (``malloc_trim``).

    glibc keeps freed blocks under its mmap threshold (up to 32 MB, which every BERT-Large
    parameter is) for reuse, so gigabytes freed after an export or a fine-tuning task would
    otherwise stay in the process's RSS. Does nothing beyond ``gc.collect()`` without glibc.
    """
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # Not glibc: nothing to do.
        pass
