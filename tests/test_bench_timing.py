"""The benchmarks' shared helpers (bench/timing.py); each benchmark's own smoke test is in its
chapter's tests."""
import argparse

from bench import timing
from tests.helpers import python

# A block of 20 MiB allocated and freed: how much of it glibc had mapped from the system for
# it, and how much the process keeps free afterwards (glibc's mallinfo2, in MiB).
ONE_BLOCK = """
import argparse, ctypes, ctypes.util, sys, torch
from bench import timing
print(timing.set_malloc(argparse.Namespace(glibc_malloc=sys.argv[1] == "glibc")))
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
mapped_before = libc.mallinfo2().hblkhd
block = torch.ones(5 << 20)
mapped = libc.mallinfo2().hblkhd - mapped_before
del block
print(mapped >> 20, libc.mallinfo2().fordblks >> 20)
"""


def _one_block(malloc):
    said, sizes = python(ONE_BLOCK, malloc).splitlines()
    return (said, *map(int, sizes.split()))


def test_set_malloc_keeps_freed_memory_unless_asked_and_says_which():
    # in processes of their own: the setting lasts for the process
    said, mapped, kept = _one_block("keep")
    assert said.startswith("malloc keeps freed memory")
    assert (mapped, kept >= 20) == (0, True), (mapped, kept)  # from the heap, and kept there
    said, mapped, kept = _one_block("glibc")
    assert said == "glibc's default malloc"
    assert (mapped, kept < 20) == (20, True), (mapped, kept)  # mapped, and handed back


def test_set_malloc_leaves_an_allocator_without_mallopt_as_it_is(monkeypatch):
    monkeypatch.setattr(timing.ctypes, "CDLL", lambda name: object())
    said = timing.set_malloc(argparse.Namespace(glibc_malloc=False))
    assert said.startswith("the system's malloc"), said
