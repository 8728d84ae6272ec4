"""The benchmarks' shared helpers (bench/timing.py); each benchmark's own smoke test is in its
chapter's tests."""
import argparse

from bench import timing


def test_set_malloc_keeps_freed_memory_unless_asked_and_says_which():
    keep, default = (argparse.Namespace(glibc_malloc=flag) for flag in (False, True))
    assert timing.set_malloc(default) == "glibc's default malloc"
    assert timing.set_malloc(keep).startswith("malloc keeps freed memory")  # glibc here


def test_set_malloc_leaves_an_allocator_without_mallopt_as_it_is(monkeypatch):
    monkeypatch.setattr(timing.ctypes, "CDLL", lambda name: object())
    said = timing.set_malloc(argparse.Namespace(glibc_malloc=False))
    assert said.startswith("the system's malloc"), said
