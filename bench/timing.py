"""Timing and agreement helpers shared by the benchmarks."""
import statistics
import time

import torch


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
