"""Time the reference norms in ``solutions.norms`` against torch's built-ins.

    PYTHONPATH=. python bench/norms.py            # 32x64x56x56 float32, 2 threads
    PYTHONPATH=. python bench/norms.py --quick    # tiny shape, 1 repeat (smoke test)

For every norm, the forward pass and the forward + backward pass (gradients of
input, weight and bias for a fixed upstream gradient) are timed on the same
input for the reference and for the built-in, the two alternating within every
repeat so that a change in the machine's load hits both alike. Each timing is
the median of ``--repeats`` runs (time.perf_counter) after ``--warmup`` untimed
runs; the ratio column is reference / built-in from this one run. The last
column is the largest difference between the two outputs (forward) or between
each of the three gradients (fwd+bwd, bwd), relative to the built-in's largest
magnitude: a sanity check that both computed the same thing. The load average
is printed before and after: a process busy on another core stalls every
multi-threaded op, and more so a reference made of several ops than a fused
kernel, so trust only a run whose load stayed well below the thread count.

Under each forward row, the floor of a forward pass made of separate torch
operations, timed in the same repeats: two reads of the input (``x.mean`` and
``torch.linalg.vector_norm`` of its rows, the two statistics) and one written pass
(``x * s``, ``s`` one number per row), and its ratio to the built-in. A fused
kernel reads each row a second time while it is still in cache, so it costs
about the written pass alone.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from bench.timing import add_malloc_option, median_times, rel_diff, set_malloc
from solutions import norms as R


def cases(N, C, H, W, groups):
    """(name, reference callable, built-in callable, affine shape) per norm."""
    rm = {"ref": torch.zeros(C), "torch": torch.zeros(C)}
    rv = {"ref": torch.ones(C), "torch": torch.ones(C)}
    return [
        ("batch_norm",
         lambda x, w, b: R.batch_norm(x, rm["ref"], rv["ref"], w, b, training=True),
         lambda x, w, b: F.batch_norm(x, rm["torch"], rv["torch"], w, b, training=True),
         (C,)),
        ("layer_norm",
         lambda x, w, b: R.layer_norm(x, (C, H, W), w, b),
         lambda x, w, b: F.layer_norm(x, (C, H, W), w, b),
         (C, H, W)),
        ("instance_norm",
         lambda x, w, b: R.instance_norm(x, weight=w, bias=b),
         lambda x, w, b: F.instance_norm(x, weight=w, bias=b),
         (C,)),
        ("group_norm",
         lambda x, w, b: R.group_norm(x, groups, w, b),
         lambda x, w, b: F.group_norm(x, groups, w, b),
         (C,)),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny shape (2x8x5x5), 1 warm-up, 1 repeat: a smoke test")
    p.add_argument("--shape", type=int, nargs=4, default=[32, 64, 56, 56],
                   metavar=("N", "C", "H", "W"))
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    add_malloc_option(p)
    args = p.parse_args(argv)
    malloc = set_malloc(args)
    if args.quick:
        args.shape, args.groups, args.repeats, args.warmup = [2, 8, 5, 5], 4, 1, 1

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    N, C, H, W = args.shape
    x = torch.randn(N, C, H, W)
    grad_out = torch.randn(N, C, H, W)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"input {N}x{C}x{H}x{W} float32, median of {args.repeats} "
          f"after {args.warmup} warm-up; load average {os.getloadavg()[0]:.2f}; {malloc}")
    header = f"{'op':<20} {'pass':<8} {'ref_ms':>10} {'torch_ms':>10} {'ratio':>7}  rel_diff"
    print(header)
    print("-" * len(header))
    t_start = time.perf_counter()

    def row(name, mode, t_ref, t_torch, diff):
        print(f"{name:<20} {mode:<8} {t_ref * 1e3:>10.3f} {t_torch * 1e3:>10.3f} "
              f"{t_ref / t_torch:>7.3f}  {diff:.1e}", flush=True)

    rows, s = x.view(N, C, H * W), torch.rand(N, C, 1)

    def floor():
        return rows.mean(-1), torch.linalg.vector_norm(rows, dim=-1), rows * s

    for name, ref, builtin, affine_shape in cases(N, C, H, W, args.groups):
        w = (1 + 0.1 * torch.randn(affine_shape)).requires_grad_()
        b = (0.1 * torch.randn(affine_shape)).requires_grad_()
        with torch.no_grad():
            t_ref, t_torch, t_floor = median_times(
                [lambda: ref(x, w, b), lambda: builtin(x, w, b), floor], args.warmup, args.repeats)
            diff = rel_diff(ref(x, w, b), builtin(x, w, b))
        row(name, "fwd", t_ref, t_torch, diff)
        print(f"  floor of separate ops (x.mean, vector_norm, x * s) {t_floor * 1e3:.3f} ms, "
              f"{t_floor / t_torch:.3g} x torch")

        xg = x.clone().requires_grad_()

        def fwd_bwd(fn):
            return lambda: torch.autograd.grad(fn(xg, w, b), (xg, w, b), grad_out)

        t_ref, t_torch = median_times([fwd_bwd(ref), fwd_bwd(builtin)], args.warmup, args.repeats)
        diff = rel_diff(fwd_bwd(ref)(), fwd_bwd(builtin)())
        row(name, "fwd+bwd", t_ref, t_torch, diff)

    # The closed-form BatchNorm backward against autograd's backward of the
    # built-in (the forward pass is outside the timed region for both).
    w = (1 + 0.1 * torch.randn(C)).requires_grad_()
    b = (0.1 * torch.randn(C)).requires_grad_()
    xg = x.clone().requires_grad_()
    y = F.batch_norm(xg, None, None, w, b, training=True)
    wd = w.detach()

    def closed_form():
        with torch.no_grad():
            return R.batch_norm_backward(grad_out, x, wd)

    t_ref, t_torch = median_times(
        [closed_form, lambda: torch.autograd.grad(y, (xg, w, b), grad_out, retain_graph=True)],
        args.warmup, args.repeats)
    diff = rel_diff(R.batch_norm_backward(grad_out, x, wd),
                    torch.autograd.grad(y, (xg, w, b), grad_out, retain_graph=True))
    row("batch_norm_backward", "bwd", t_ref, t_torch, diff)
    print(f"total {time.perf_counter() - t_start:.1f} s; load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
