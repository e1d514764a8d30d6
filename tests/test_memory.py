"""What glibc does with freed memory inside and outside memory.keep_freed_memory()."""

import ctypes
import os
import platform

import numpy as np
import pytest

from bert_cased_L_24_H_1024_A_16.memory import keep_freed_memory

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc",
                                reason="malloc tuning is glibc's")
BLOCK = 24 * 2**20  # Under glibc's largest mmap threshold (32 MB), over its default (128 KB).


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _freed_and_returned():
    """Bytes of RSS that freeing a touched BLOCK gives back to the OS at once."""
    block = np.ones(BLOCK // 8)
    before = _rss()
    del block
    return before - _rss()


def test_freed_blocks_are_kept_inside_and_returned_after():
    # glibc raises its mmap threshold as big blocks are freed, so a process that ran other code
    # may keep a block this size anyway; leaving the context sets the threshold back to 128 KB.
    with keep_freed_memory():
        pass
    assert _freed_and_returned() > BLOCK * 0.9, "after the context glibc unmaps a block this size when it is freed"
    with keep_freed_memory():
        with keep_freed_memory():  # Nested: the inner exit must not end the outer's setting.
            pass
        assert _freed_and_returned() < BLOCK * 0.1, "inside, the block must stay for reuse"
        held = _rss()
    assert held - _rss() > BLOCK * 0.9, "leaving the context must return the free heap to the OS"
    assert _freed_and_returned() > BLOCK * 0.9, "and put glibc's defaults back"


def test_without_glibc_it_does_nothing(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda *args: (_ for _ in ()).throw(OSError("no libc")))
    with keep_freed_memory():
        pass
