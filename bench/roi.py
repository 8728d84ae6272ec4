"""Time the vectorised RoI ops in ``solutions.roi`` against ONNX Runtime and straightforward loops.

    PYTHONPATH=. python bench/roi.py            # 512 boxes on a 2x256x50x50 map, float32
    PYTHONPATH=. python bench/roi.py --quick    # tiny sizes, 1 repeat (smoke test)

torchvision is not installed. Two baselines: ONNX Runtime's C++ ``RoiAlign``
kernel (forward only; bench/ort.py), and the implementation one writes first:
a Python loop over boxes and bins (and, for RoI Align, over the samples of
each bin), vectorised over channels only. Boxes are drawn in the coordinates
of an image 16 times larger than the feature map (``spatial_scale = 1/16``),
with sides log-uniform between 2 and ``--max-side`` feature pixels, centres
anywhere on the map (so some stick out), batch index at random.

Rows ``<op>_vs_ort`` time the forward pass against ONNX Runtime on all boxes;
rows ``<op>_vs_loop`` the forward pass and the forward + backward pass
(gradient of the input for a fixed upstream gradient) against the loop, which
is far slower, so it runs on the first ``--loop-boxes`` boxes only and its time
is scaled by K / loop_boxes (same box distribution; the output says so). Each
timing is the median of ``--repeats`` runs (time.perf_counter) after
``--warmup`` untimed runs, the two sides taking turns within each repeat
(against ONNX Runtime, each side timed on its own: its idle threads spin and
slow the torch call that follows); ``ratio`` is reference / other from this one run (< 1: the reference is
faster). ``rel_diff`` is the largest difference between the two outputs (fwd)
or input gradients (fwd+bwd), relative to the other side's largest magnitude:
a check that both computed the same thing (asserted below 1e-5 against ONNX
Runtime). The header shows the load average, since other processes on the
machine distort the timings.
"""
import argparse
import math
import os
import sys
import time

import torch

from bench import ort
from bench.timing import add_malloc_option, median_times, rel_diff, set_malloc
from autograder.oracles.roi import tv_roi_align_samples, tv_roi_pool_windows
from solutions import roi as R


# ---------------------------------------------------------------- loop baselines

def loop_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """One RoI, bin and sample at a time (the taps of the kernel port), channels at once."""
    N, C, H, W = input.shape
    out = []
    for roi in rois.tolist():
        img = input[int(roi[0])]
        taps, count = tv_roi_align_samples(roi, H, W, output_size, spatial_scale,
                                           sampling_ratio, aligned)
        bins = [sum((w * img[:, y, x] for w, y, x in pixels), input.new_zeros(C)) / count
                for pixels in taps.values()]
        out.append(torch.stack(bins, 1).view(C, *output_size))
    return torch.stack(out)


def loop_roi_pool(input, rois, output_size, spatial_scale):
    """One RoI and bin at a time (the windows of the kernel port), channels at once."""
    N, C, H, W = input.shape
    out = []
    for roi in rois.tolist():
        img = input[int(roi[0])]
        windows = tv_roi_pool_windows(roi, H, W, output_size, spatial_scale, input.dtype)
        bins = [img[:, h0:h1, w0:w1].amax(dim=(1, 2)) if h1 > h0 and w1 > w0
                else input.new_zeros(C) for h0, h1, w0, w1 in windows.values()]
        out.append(torch.stack(bins, 1).view(C, *output_size))
    return torch.stack(out)


# ---------------------------------------------------------------- main

def make_rois(K, N, H, W, stride, max_side, generator):
    side = torch.exp(torch.empty(K, 2).uniform_(math.log(2), math.log(max_side),
                                                generator=generator))  # (w, h), feature px
    centre = torch.rand(K, 2, generator=generator) * torch.tensor([W, H], dtype=torch.float32)
    boxes = torch.cat([centre - side / 2, centre + side / 2], 1) * stride  # image px
    batch = torch.randint(0, N, (K, 1), generator=generator).float()
    return torch.cat([batch, boxes], 1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (12 boxes on 2x8x12x12), 1 warm-up, 1 repeat: a smoke test")
    p.add_argument("--boxes", type=int, default=512)
    p.add_argument("--shape", type=int, nargs=4, default=[2, 256, 50, 50],
                   metavar=("N", "C", "H", "W"))
    p.add_argument("--output-size", type=int, default=7)
    p.add_argument("--max-side", type=float, default=32.0,
                   help="largest box side in feature-map pixels")
    p.add_argument("--loop-boxes", type=int, default=2,
                   help="boxes given to the loop baseline (its time is scaled to --boxes; its "
                        "backward, thousands of tiny autograd nodes per box, takes minutes)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    add_malloc_option(p)
    args = p.parse_args(argv)
    malloc = set_malloc(args)
    if args.quick:
        args.boxes, args.shape, args.max_side, args.loop_boxes = 12, [2, 8, 12, 12], 8.0, 12
        args.repeats, args.warmup, args.output_size = 1, 1, 3

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    N, C, H, W = args.shape
    K, M, P, stride = args.boxes, min(args.loop_boxes, args.boxes), args.output_size, 16
    x = torch.randn(N, C, H, W, generator=g)
    rois = make_rois(K, N, H, W, stride, args.max_side, g)
    grad_out = torch.randn(K, C, P, P, generator=g)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {N}x{C}x{H}x{W} "
          f"float32, {K} boxes (sides 2..{args.max_side:g} px, spatial_scale 1/{stride}), "
          f"output {P}x{P}, median of {args.repeats} after {args.warmup} warm-up; "
          f"load average {os.getloadavg()[0]:.2f}; {malloc}")
    print(f"loop baseline timed on the first {M} boxes and scaled by {K}/{M}; ONNX Runtime "
          f"{ort.onnxruntime.__version__} on all {K}")
    header = f"{'row':<28} {'pass':<8} {'ref_ms':>10} {'other_ms':>10} {'ratio':>8}  rel_diff"
    print(header)
    print("-" * len(header))
    t_start = time.perf_counter()

    def row(name, mode, t_ref, t_other, diff):
        print(f"{name:<28} {mode:<8} {t_ref * 1e3:>10.3f} {t_other * 1e3:>10.3f} "
              f"{t_ref / t_other:>8.3g}  {diff:.1e}", flush=True)

    # (name, note, reference, loop, ONNX Runtime's arguments after the tensors or None)
    cases = [
        ("roi_align", "sampling_ratio=2, aligned=True (Mask R-CNN)",
         lambda t, r: R.roi_align(t, r, P, 1 / stride, 2, True),
         lambda t, r: loop_roi_align(t, r, (P, P), 1 / stride, 2, True),
         ((P, P), 1 / stride, 2, True)),
        ("roi_align_adaptive", "sampling_ratio=-1, aligned=False (torchvision's defaults)",
         lambda t, r: R.roi_align(t, r, P, 1 / stride),
         lambda t, r: loop_roi_align(t, r, (P, P), 1 / stride, -1, False),
         ((P, P), 1 / stride, -1, False)),
        ("roi_pool", "Fast R-CNN",
         lambda t, r: R.roi_pool(t, r, P, 1 / stride),
         lambda t, r: loop_roi_pool(t, r, (P, P), 1 / stride),
         None),
    ]
    notes = []
    for name, note, ref, loop, ort_args in cases:
        notes.append(f"{name}: {note}")
        scale = K / M
        with torch.no_grad():
            if ort_args:
                kernel = ort.roi_align(x, rois, *ort_args, threads=args.threads)
                # timed apart: ONNX Runtime's threads spin for a while after each run, and
                # a torch call right after one runs up to twice as slow
                (t_ref,) = median_times([lambda: ref(x, rois)], args.warmup, args.repeats)
                (t_ort,) = median_times([kernel], args.warmup, args.repeats)
                diff = rel_diff(ref(x, rois), kernel())
                assert diff < 1e-5, f"{name}: the reference and ONNX Runtime differ by {diff:.1e}"
                row(f"{name}_vs_ort", "fwd", t_ref, t_ort, diff)
            t_ref, t_loop = median_times([lambda: ref(x, rois), lambda: loop(x, rois[:M])],
                                         args.warmup, args.repeats)
            diff = rel_diff(ref(x, rois[:M]), loop(x, rois[:M]))
        row(f"{name}_vs_loop", "fwd", t_ref, t_loop * scale, diff)

        xg = x.clone().requires_grad_()

        def fwd_bwd(fn, r):
            return lambda: torch.autograd.grad(fn(xg, r), xg, grad_out[:len(r)])[0]

        t_ref, t_loop = median_times([fwd_bwd(ref, rois), fwd_bwd(loop, rois[:M])],
                                     args.warmup, args.repeats)
        diff = rel_diff(fwd_bwd(ref, rois[:M])(), fwd_bwd(loop, rois[:M])())
        row(f"{name}_vs_loop", "fwd+bwd", t_ref, t_loop * scale, diff)
    print("; ".join(notes))
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
