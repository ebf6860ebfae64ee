"""The training process's allocator setting (core/memory.py), checked in fresh processes."""

import ctypes
import os
import subprocess
import sys

import pytest

GLIBC = hasattr(os, "confstr") and "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "")

# Bytes that glibc's malloc holds in mmapped blocks (mallinfo2's hblkhd) grow by this much when a
# 16 MB tensor is made; with keep_freed_memory() it comes from the heap instead.
PROBE = """
import ctypes, sys, torch
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "keep":
    from accel_signs.core.memory import keep_freed_memory
    assert keep_freed_memory()
before = libc.mallinfo2().hblkhd
x = torch.empty(4 * 2**20)
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(not GLIBC or not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc >= 2.33")
def test_keep_freed_memory_serves_step_sized_tensors_from_the_heap():
    def mapped(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    assert mapped("default") >= 16 * 2**20  # glibc's default: a block this size is its own mmap
    assert mapped("keep") == 0
