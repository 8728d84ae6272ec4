"""Timing and agreement helpers shared by the benchmarks."""
import ctypes
import ctypes.util
import statistics
import time

import torch


def add_malloc_option(parser):
    parser.add_argument("--glibc-malloc", action="store_true",
                        help="leave glibc's malloc returning large freed blocks to the system "
                             "(by default the benchmark keeps them: see bench/timing.py)")


def set_malloc(args) -> str:
    """Unless ``--glibc-malloc``, have glibc keep the memory the process frees for its next
    allocations; return the header's words for the allocator in use.

    By default glibc hands a freed block of a few megabytes back to the system, and the
    next array of that size is faulted in again page by page: on the course's 2-core
    machine about 0.7 us a 4 KB page, more than writing the page, and for
    ``deform_conv2d`` about half its time. ONNX Runtime's arena keeps its memory, so the
    benchmarks would time glibc's policy rather than the operations. Keeping freed memory
    is what PyTorch's CPU tuning guide gets from jemalloc or TCMalloc ("Switch Memory
    allocator", pytorch/tutorials recipes_source/recipes/tuning_guide.py); here glibc's
    own ``mallopt``: blocks up to 32 MiB (the most it allows) come from the heap, whose
    top is never trimmed.
    """
    if args.glibc_malloc:
        return "glibc's default malloc"
    mallopt = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt", None)
    if mallopt is None:  # not glibc (macOS, say): its allocator as it is
        return "the system's malloc (no mallopt: freed memory may go back to the system)"
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    if not (mallopt(M_MMAP_THRESHOLD, 32 << 20) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
        raise RuntimeError("mallopt refused the thresholds; run with --glibc-malloc")
    return "malloc keeps freed memory (--glibc-malloc to return it)"


def median_times(fns, warmup, repeats):
    """Median wall time of each callable, run in turn within every repeat, so that a
    change in the machine's load hits all of them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def rel_diff(ours, theirs):
    """max |ours - theirs| / max |theirs| over a tensor or pairs of tensors."""
    if isinstance(ours, torch.Tensor):
        ours, theirs = (ours,), (theirs,)
    return max(((a - c).abs().max() / c.abs().max()).item() for a, c in zip(ours, theirs))
