"""Time the vectorised RoI ops in ``solutions.roi`` against straightforward loops.

    PYTHONPATH=. python bench/roi.py            # 512 boxes on a 2x256x50x50 map, float32
    PYTHONPATH=. python bench/roi.py --quick    # tiny sizes, 1 repeat (smoke test)

torchvision is not installed, so the baseline is the implementation one writes
first: a Python loop over boxes and bins (and, for RoI Align, over the samples
of each bin), vectorised over channels only. Boxes are drawn in the coordinates
of an image 16 times larger than the feature map (``spatial_scale = 1/16``),
with sides log-uniform between 2 and ``--max-side`` feature pixels, centres
anywhere on the map (so some stick out), batch index at random.

For each op the forward pass and the forward + backward pass (gradient of the
input for a fixed upstream gradient) are timed. Each timing is the median of
``--repeats`` runs (time.perf_counter) after ``--warmup`` untimed runs. The
loop is far slower, so it runs on the first ``--loop-boxes`` boxes only and
its time is scaled by K / loop_boxes (same box distribution; the output says
so); ``speedup`` is loop / reference from this one run. ``rel_diff`` is the
largest difference between the two outputs (fwd) or input gradients (fwd+bwd)
on those boxes, relative to the loop's largest magnitude: a check that both
computed the same thing. The header shows the load average, since other
processes on the machine distort the timings.
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch

from autograder.oracles.roi import tv_bilinear, tv_round
from solutions import roi as R


def median_time(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rel_diff(ours, theirs):
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


# ---------------------------------------------------------------- loop baselines

def loop_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned):
    N, C, H, W = input.shape
    PH, PW = output_size
    offset = 0.5 if aligned else 0.0
    out = []
    for b, x1, y1, x2, y2 in rois.tolist():
        img = input[int(b)]
        start_w, start_h = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        roi_w = x2 * spatial_scale - offset - start_w
        roi_h = y2 * spatial_scale - offset - start_h
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / PH, roi_w / PW
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / PH)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / PW)
        count = max(gh * gw, 1)
        bins = []
        for ph in range(PH):
            for pw in range(PW):
                acc = input.new_zeros(C)
                for iy in range(gh):
                    y = start_h + ph * bin_h + (iy + 0.5) * bin_h / gh
                    for ix in range(gw):
                        x = start_w + pw * bin_w + (ix + 0.5) * bin_w / gw
                        for w, yy, xx in tv_bilinear(float, H, W, y, x):  # [] outside
                            acc = acc + w * img[:, yy, xx]
                bins.append(acc / count)
        out.append(torch.stack(bins, 1).view(C, PH, PW))
    return torch.stack(out)


def loop_roi_pool(input, rois, output_size, spatial_scale):
    N, C, H, W = input.shape
    PH, PW = output_size
    out = []
    for b, x1, y1, x2, y2 in rois.tolist():
        img = input[int(b)]
        x1, y1, x2, y2 = (tv_round(v * spatial_scale) for v in (x1, y1, x2, y2))
        roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        bins = []
        for ph in range(PH):
            h0 = min(max(math.floor(ph * roi_h / PH) + y1, 0), H)
            h1 = min(max(math.ceil((ph + 1) * roi_h / PH) + y1, 0), H)
            for pw in range(PW):
                w0 = min(max(math.floor(pw * roi_w / PW) + x1, 0), W)
                w1 = min(max(math.ceil((pw + 1) * roi_w / PW) + x1, 0), W)
                if h1 <= h0 or w1 <= w0:
                    bins.append(input.new_zeros(C))
                else:
                    bins.append(img[:, h0:h1, w0:w1].amax(dim=(1, 2)))
        out.append(torch.stack(bins, 1).view(C, PH, PW))
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
    p.add_argument("--loop-boxes", type=int, default=32,
                   help="boxes given to the loop baseline (its time is scaled to --boxes)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
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
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"loop baseline timed on the first {M} boxes and scaled by {K}/{M}")
    header = f"{'op':<20} {'pass':<8} {'ref_ms':>10} {'loop_ms':>10} {'speedup':>8}  rel_diff"
    print(header)
    print("-" * len(header))
    t_start = time.perf_counter()
    cases = [
        ("roi_align", "sampling_ratio=2, aligned=True (Mask R-CNN)",
         lambda t, r: R.roi_align(t, r, P, 1 / stride, 2, True),
         lambda t, r: loop_roi_align(t, r, (P, P), 1 / stride, 2, True)),
        ("roi_align_adaptive", "sampling_ratio=-1, aligned=False (torchvision's defaults)",
         lambda t, r: R.roi_align(t, r, P, 1 / stride),
         lambda t, r: loop_roi_align(t, r, (P, P), 1 / stride, -1, False)),
        ("roi_pool", "Fast R-CNN",
         lambda t, r: R.roi_pool(t, r, P, 1 / stride),
         lambda t, r: loop_roi_pool(t, r, (P, P), 1 / stride)),
    ]
    notes = []
    for name, note, ref, loop in cases:
        notes.append(f"{name}: {note}")
        scale = K / M
        with torch.no_grad():
            t_ref = median_time(lambda: ref(x, rois), args.warmup, args.repeats)
            t_loop = median_time(lambda: loop(x, rois[:M]), args.warmup, args.repeats) * scale
            diff = rel_diff(ref(x, rois[:M]), loop(x, rois[:M]))
        print(f"{name:<20} {'fwd':<8} {t_ref * 1e3:>10.3f} {t_loop * 1e3:>10.3f} "
              f"{t_loop / t_ref:>8.3g}  {diff:.1e}", flush=True)

        xg = x.clone().requires_grad_()

        def fwd_bwd(fn, r):
            return lambda: torch.autograd.grad(fn(xg, r), xg, grad_out[:len(r)])[0]

        t_ref = median_time(fwd_bwd(ref, rois), args.warmup, args.repeats)
        t_loop = median_time(fwd_bwd(loop, rois[:M]), args.warmup, args.repeats) * scale
        diff = rel_diff(fwd_bwd(ref, rois[:M])(), fwd_bwd(loop, rois[:M])())
        print(f"{name:<20} {'fwd+bwd':<8} {t_ref * 1e3:>10.3f} {t_loop * 1e3:>10.3f} "
              f"{t_loop / t_ref:>8.3g}  {diff:.1e}", flush=True)
    print("; ".join(notes))
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
