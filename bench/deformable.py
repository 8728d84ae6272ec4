"""Time ``solutions.deformable.deform_conv2d`` against ONNX Runtime, a plain conv and loops.

    PYTHONPATH=. python bench/deformable.py            # 8x64x32x32 -> 64, 3x3, float32, 2 threads
    PYTHONPATH=. python bench/deformable.py --quick    # tiny shapes, 1 repeat (smoke test)

Rows (``ours`` is always deform_conv2d; ``other`` the named competitor):

    vs_ort          random offsets (std 1 pixel) and a mask, forward against ONNX
                    Runtime's C++ ``DeformConv`` kernel (opset 19; bench/ort.py),
                    which has no backward; agreement asserted to 1e-5.
    vs_conv2d       zero offsets, no mask, against F.conv2d on the same input and
                    weight: the price of sampling every tap by gather instead of
                    a native convolution. fwd+bwd: gradients of input, weight, bias.
    vs_tap_loop     random offsets (std 1 pixel) and a mask, against a
                    straightforward implementation with a Python loop over the
                    KH*KW taps (autograder/oracles/deformable.py, the hidden
                    tests' oracle): each tap sampled for the whole
                    batch by F.grid_sample (bilinear, zeros padding,
                    align_corners=True: the same zero-outside rule), then
                    accumulated by a matmul. fwd+bwd: gradients of input,
                    offset, mask, weight, bias.
    vs_python_loop  forward against autograder/oracles/deformable_loops.py, the
                    port of torchvision's CPU kernel in pure Python loops, on the
                    small ``--loop-shape`` (it is far too slow at the main shape);
                    both sides are timed on that small shape, so the ratio needs
                    no normalisation.

Each timing is the median of ``--repeats`` runs (time.perf_counter) after
``--warmup`` untimed runs, ours and other taking turns within each repeat so
that load changes hit both, except in two rows where each side is timed on its
own: vs_ort (ONNX Runtime's idle threads spin and slow the torch call that
follows) and the Python-loop row (the loop ``--loop-repeats`` times without
warm-up). The ratio is ours / other from this one run (< 1: ours is faster).
rel_diff is the largest difference between the two results (outputs, or each
gradient), relative to the other side's largest magnitude: a check that both
computed the same thing. The header shows the load average, since other
processes on the machine distort the timings.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from bench import ort
from bench.timing import add_malloc_option, median_times, rel_diff, set_malloc
from autograder.oracles.deformable import tap_loop_deform_conv2d
from autograder.oracles import deformable_loops as S
from solutions import deformable as R


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes, 1 warm-up, 1 repeat: a smoke test")
    p.add_argument("--shape", type=int, nargs=5, default=[8, 64, 64, 32, 32],
                   metavar=("N", "C_in", "C_out", "H", "W"))
    p.add_argument("--kernel", type=int, default=3, help="square kernel, padding kernel // 2")
    p.add_argument("--loop-shape", type=int, nargs=5, default=[2, 16, 16, 12, 12],
                   metavar=("N", "C_in", "C_out", "H", "W"))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--loop-repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    add_malloc_option(p)
    args = p.parse_args(argv)
    malloc = set_malloc(args)
    if args.quick:
        args.shape, args.loop_shape = [2, 4, 4, 6, 6], [1, 2, 2, 4, 4]
        args.repeats, args.warmup, args.loop_repeats = 1, 1, 1

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    N, C, O, H, W = args.shape
    K, pad = args.kernel, args.kernel // 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, input "
          f"{N}x{C}x{H}x{W} -> {O} channels, {K}x{K} kernel, padding {pad}; Python loop on "
          f"{'x'.join(map(str, args.loop_shape[:2]))}x{'x'.join(map(str, args.loop_shape[3:]))} -> "
          f"{args.loop_shape[2]}; ONNX Runtime {ort.onnxruntime.__version__}; median of "
          f"{args.repeats} after {args.warmup} warm-up; load average {os.getloadavg()[0]:.2f}; {malloc}")
    header = f"{'row':<15} {'pass':<8} {'ours_ms':>10} {'other_ms':>10} {'ratio':>8}  rel_diff"
    print(header)
    print("-" * len(header))
    t_start = time.perf_counter()

    def row(name, mode, t_ours, t_other, diff):
        print(f"{name:<15} {mode:<8} {t_ours * 1e3:>10.3f} {t_other * 1e3:>10.3f} "
              f"{t_ours / t_other:>8.3g}  {diff:.1e}", flush=True)

    x = torch.randn(N, C, H, W)
    w = torch.randn(O, C, K, K) / (C * K * K) ** 0.5
    b = 0.1 * torch.randn(O)
    Ho, Wo = H + 2 * pad - K + 1, W + 2 * pad - K + 1
    grad_out = torch.randn(N, O, Ho, Wo)

    def timed_pair(ours, other, leaves):
        """(fwd ours, fwd other, fwd diff, fwd+bwd ours, fwd+bwd other, grads diff)."""
        with torch.no_grad():
            t_ours, t_other = median_times([ours, other], args.warmup, args.repeats)
            diff = rel_diff(ours(), other())

        def fwd_bwd(fn):
            return lambda: torch.autograd.grad(fn(), leaves, grad_out)

        tb_ours, tb_other = median_times([fwd_bwd(ours), fwd_bwd(other)], args.warmup,
                                         args.repeats)
        return t_ours, t_other, diff, tb_ours, tb_other, rel_diff(fwd_bwd(ours)(), fwd_bwd(other)())

    # ---- zero offsets against F.conv2d
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    zero = torch.zeros(N, 2 * K * K, Ho, Wo)
    r = timed_pair(lambda: R.deform_conv2d(xg, zero, wg, bg, padding=pad),
                   lambda: F.conv2d(xg, wg, bg, padding=pad), (xg, wg, bg))
    row("vs_conv2d", "fwd", *r[:3])
    row("vs_conv2d", "fwd+bwd", *r[3:])

    # ---- random offsets and mask against ONNX Runtime, then the loop over taps
    offset = torch.randn(N, 2 * K * K, Ho, Wo).requires_grad_()
    mask = torch.rand(N, K * K, Ho, Wo).requires_grad_()
    kernel = ort.deform_conv2d(x, offset, w, b, pad, mask, threads=args.threads)
    with torch.no_grad():
        def ours():
            return R.deform_conv2d(x, offset, w, b, padding=pad, mask=mask)

        # timed apart: ONNX Runtime's threads spin for a while after each run, and a torch
        # call right after one ran twice as slow
        (t_ours,) = median_times([ours], args.warmup, args.repeats)
        (t_ort,) = median_times([kernel], args.warmup, args.repeats)
        diff = rel_diff(ours(), kernel())
    assert diff < 1e-5, f"deform_conv2d and ONNX Runtime differ by {diff:.1e}"
    row("vs_ort", "fwd", t_ours, t_ort, diff)
    leaves = (xg, offset, mask, wg, bg)
    r = timed_pair(lambda: R.deform_conv2d(xg, offset, wg, bg, padding=pad, mask=mask),
                   lambda: tap_loop_deform_conv2d(xg, offset, wg, bg, padding=pad, mask=mask), leaves)
    row("vs_tap_loop", "fwd", *r[:3])
    row("vs_tap_loop", "fwd+bwd", *r[3:])

    # ---- the pure-Python port of torchvision's kernel, on the small shape
    n, c, o, h, w_ = args.loop_shape
    xs, ws, bs = torch.randn(n, c, h, w_), torch.randn(o, c, K, K), torch.randn(o)
    ho, wo = h + 2 * pad - K + 1, w_ + 2 * pad - K + 1
    offs, masks = torch.randn(n, 2 * K * K, ho, wo), torch.rand(n, K * K, ho, wo)
    with torch.no_grad():
        def ours():
            return R.deform_conv2d(xs, offs, ws, bs, padding=pad, mask=masks)

        def loop():
            return S.deform_conv2d_loop(xs, offs, ws, bs, padding=pad, mask=masks)

        # timed apart: a 100 ms Python loop between two runs of ours would leave it cold
        (t_ours,) = median_times([ours], args.warmup, args.repeats)
        (t_loop,) = median_times([loop], 0, args.loop_repeats)
        diff = rel_diff(ours().double(), loop())
    row("vs_python_loop", "fwd", t_ours, t_loop, diff)
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
