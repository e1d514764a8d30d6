"""What glibc does with freed memory inside and outside memory.keep_freed_memory().

glibc's behaviour depends on what the process allocated and freed before (its mmap threshold rises
as big blocks are freed, and freed chunks are reused), so the scenario runs in a fresh process."""

import ctypes
import json
import platform
import subprocess
import sys

import pytest

from bert_cased_L_24_H_1024_A_16.memory import keep_freed_memory

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc",
                                reason="malloc tuning is glibc's")
BLOCK = 24 * 2**20  # Under glibc's largest mmap threshold (32 MB), over its default (128 KB).

_SCENARIO = r"""
import json, os, sys
import numpy as np
from bert_cased_L_24_H_1024_A_16.memory import keep_freed_memory
BLOCK = int(sys.argv[1])

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def freed_and_returned():
    block = np.ones(BLOCK // 8)
    before = rss()
    del block
    return before - rss()

out = {"before": freed_and_returned()}
with keep_freed_memory():
    with keep_freed_memory():  # Nested: the inner exit must not end the outer's setting.
        pass
    out["inside"] = freed_and_returned()
    held = rss()
out["returned_on_exit"] = held - rss()
out["after"] = freed_and_returned()
print(json.dumps(out))
"""


def test_freed_blocks_are_kept_inside_and_returned_after():
    done = subprocess.run([sys.executable, "-c", _SCENARIO, str(BLOCK)], capture_output=True, text=True, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["before"] > BLOCK * 0.9, f"glibc unmaps a block this size when it is freed: {measured}"
    assert measured["inside"] < BLOCK * 0.1, f"inside, the block must stay for reuse: {measured}"
    assert measured["returned_on_exit"] > BLOCK * 0.9, f"leaving must return the free heap to the OS: {measured}"
    assert measured["after"] > BLOCK * 0.9, f"and put glibc's defaults back: {measured}"


def test_without_glibc_it_does_nothing(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda *args: (_ for _ in ()).throw(OSError("no libc")))
    with keep_freed_memory():
        pass
