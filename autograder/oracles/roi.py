"""The RoI exercise's oracle: loop ports of torchvision's RoI kernels (torchvision is not installed).

The hidden tests of exercises/roi.ipynb include this file, and tests/test_roi.py
checks the reference against it. Every name starts with ``tv_``/``TV_`` so that
nothing a student defines in the notebook can shadow it (or be shadowed).

Ported line by line from torchvision's CPU kernels (pytorch/vision,
torchvision/csrc/ops/cpu/roi_align_kernel.cpp, roi_align_common.h,
roi_pool_kernel.cpp) and Python helpers (torchvision/ops/_utils.py,
boxes.py), one RoI, bin, sample and channel at a time:

- ``tv_roi_align`` / ``tv_roi_pool``: the forward kernels. Coordinates are
  computed with NumPy scalars of the input's precision (float32 or float64), so
  every rounding decision (which pixel, which bin edge) is the kernel's own.
  Input values are read one element at a time: from a nested Python list
  (fast), or, with ``differentiable=True``, as 0-dim tensors indexed out of
  ``input`` so that autograd through the loop gives the gradient.
- ``tv_roi_align_backward`` / ``tv_roi_pool_backward``: the kernels'
  backward rules (scatter each output's gradient to the four bilinear
  neighbours of every sample / to the argmax), written independently of autograd.
- ``tv_convert_boxes_to_roi_format``: torchvision's list -> Tensor[K, 5] helper.
- ``tv_box_iou``: IoU pair by pair in Python floats.

Rounding half away from zero is done with ``decimal`` (exact), independently of
the reference's trunc/sign formula.
"""
import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import torch

TV_FLT_MAX = float(np.finfo(np.float32).max)


def tv_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def tv_scalar_type(dtype):
    return {torch.float32: np.float32, torch.float64: np.float64}[dtype]


def tv_convert_boxes_to_roi_format(boxes):
    """torchvision.ops._utils.convert_boxes_to_roi_format: list of (L, 4) -> (K, 5)."""
    concat_boxes = torch.cat(list(boxes), dim=0)
    ids = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0)
    return torch.cat([ids, concat_boxes], dim=1)


def tv_reader(input, differentiable, values=None):
    """Read input[b, c, y, x]: a 0-dim tensor (differentiable) or a float from ``values``,
    the input as nested lists (``input.tolist()`` if not given)."""
    if differentiable:
        return lambda b, c, y, x: input[b, c, y, x]
    values = input.detach().tolist() if values is None else values
    return lambda b, c, y, x: values[b][c][y][x]


def tv_assemble(out, K, C, PH, PW, input, differentiable):
    if differentiable:
        if K == 0:
            return input.new_zeros((0, C, PH, PW))
        return torch.stack([torch.stack([torch.stack([torch.stack(list(row)) for row in ch])
                                         for ch in roi]) for roi in out])
    return torch.tensor(out, dtype=input.dtype).reshape(K, C, PH, PW)


# ---------------------------------------------------------------- RoI Align

def tv_roi_geometry(roi, T, spatial_scale, PH, PW, sampling_ratio, aligned):
    """The kernel's per-RoI set-up, in precision T."""
    roi_batch_ind = int(roi[0])
    offset = T(0.5) if aligned else T(0.0)
    scale = T(spatial_scale)
    roi_start_w = T(roi[1]) * scale - offset
    roi_start_h = T(roi[2]) * scale - offset
    roi_end_w = T(roi[3]) * scale - offset
    roi_end_h = T(roi[4]) * scale - offset
    roi_width = roi_end_w - roi_start_w
    roi_height = roi_end_h - roi_start_h
    if not aligned:  # Force malformed ROIs to be 1x1
        roi_width = max(roi_width, T(1.0))
        roi_height = max(roi_height, T(1.0))
    bin_size_h = T(roi_height) / T(PH)
    bin_size_w = T(roi_width) / T(PW)
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_height / T(PH))
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_width / T(PW))
    return roi_batch_ind, roi_start_h, roi_start_w, bin_size_h, bin_size_w, grid_h, grid_w


def tv_sample_y_x(T, roi_start_h, roi_start_w, bin_size_h, bin_size_w, grid_h, grid_w,
                ph, pw, iy, ix):
    yy = roi_start_h + T(ph) * bin_size_h + T(iy + 0.5) * bin_size_h / T(grid_h)
    xx = roi_start_w + T(pw) * bin_size_w + T(ix + 0.5) * bin_size_w / T(grid_w)
    return yy, xx


def tv_bilinear(T, height, width, y, x):
    """pre_calc_for_bilinear_interpolate for one sample: [(weight, y, x)] * 4, or [] if outside."""
    if not (y >= -1.0 and y <= height and x >= -1.0 and x <= width):
        return []
    if y <= 0:
        y = T(0)
    if x <= 0:
        x = T(0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = T(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = T(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - T(y_low), x - T(x_low)
    hy, hx = T(1.0) - ly, T(1.0) - lx
    return [(hy * hx, y_low, x_low), (hy * lx, y_low, x_high),
            (ly * hx, y_high, x_low), (ly * lx, y_high, x_high)]


def tv_roi_align_samples(roi, height, width, output_size, spatial_scale=1.0, sampling_ratio=-1,
                         aligned=False, dtype=torch.float64):
    """``({(ph, pw): [(weight, y, x), ...]}, count)``: every pixel each bin of one RoI reads
    (the kernel's pre_calc, shared by all channels), and the number of samples per bin."""
    T = tv_scalar_type(dtype)
    PH, PW = tv_pair(output_size)
    _, sh, sw, bh, bw, gh, gw = tv_roi_geometry(roi, T, spatial_scale, PH, PW, sampling_ratio,
                                                aligned)
    taps = {}
    for ph in range(PH):
        for pw in range(PW):
            taps[ph, pw] = []
            for iy in range(gh):
                for ix in range(gw):
                    y, x = tv_sample_y_x(T, sh, sw, bh, bw, gh, gw, ph, pw, iy, ix)
                    taps[ph, pw] += [(float(w), yy, xx)
                                     for w, yy, xx in tv_bilinear(T, height, width, y, x)]
    return taps, max(gh * gw, 1)


def tv_roi_align(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1,
                 aligned=False, differentiable=False):
    """torchvision's roi_align_forward_kernel_impl; rois (K, 5). Returns (K, C, PH, PW)."""
    N, C, H, W = input.shape
    PH, PW = tv_pair(output_size)
    read = tv_reader(input, differentiable)
    out = []
    for roi in rois.tolist():
        b = int(roi[0])
        taps, count = tv_roi_align_samples(roi, H, W, (PH, PW), spatial_scale, sampling_ratio,
                                           aligned, input.dtype)
        roi_out = []
        for c in range(C):
            rows = []
            for ph in range(PH):
                row = []
                for pw in range(PW):
                    acc = 0.0
                    for w, yy, xx in taps[ph, pw]:
                        acc = acc + w * read(b, c, yy, xx)
                    if differentiable and not isinstance(acc, torch.Tensor):
                        acc = input.new_zeros(()) + acc  # no sample: still part of the graph
                    row.append(acc / count)
                rows.append(row)
            roi_out.append(rows)
        out.append(roi_out)
    return tv_assemble(out, len(out), C, PH, PW, input, differentiable)


def tv_roi_align_backward(grad_output, rois, input_shape, spatial_scale=1.0,
                          sampling_ratio=-1, aligned=False, dtype=torch.float64):
    """torchvision's roi_align_backward_kernel_impl: grad_output (K, C, PH, PW) -> (N, C, H, W)."""
    N, C, H, W = input_shape
    K, _, PH, PW = grad_output.shape
    g = grad_output.tolist()
    grad = [[[[0.0] * W for _ in range(H)] for _ in range(C)] for _ in range(N)]
    for k, roi in enumerate(rois.tolist()):
        b = int(roi[0])
        taps, count = tv_roi_align_samples(roi, H, W, (PH, PW), spatial_scale, sampling_ratio,
                                           aligned, dtype)
        for c in range(C):
            for (ph, pw), pixels in taps.items():
                for w, y, x in pixels:
                    grad[b][c][y][x] += g[k][c][ph][pw] * w / count
    return torch.tensor(grad, dtype=torch.float64).reshape(N, C, H, W)


# ---------------------------------------------------------------- RoI Pool

def tv_round(v) -> int:
    """C's round(): 2.5 -> 3, -2.5 -> -3, 0.49999997 -> 0 (exact, via Decimal)."""
    return int(Decimal(float(v)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def tv_roi_pool_windows(roi, height, width, output_size, spatial_scale=1.0, dtype=torch.float64):
    """{(ph, pw): (hstart, hend, wstart, wend)} of one RoI, clipped to the image, ends exclusive."""
    T = tv_scalar_type(dtype)
    PH, PW = tv_pair(output_size)
    scale = T(spatial_scale)
    roi_start_w = tv_round(T(roi[1]) * scale)
    roi_start_h = tv_round(T(roi[2]) * scale)
    roi_end_w = tv_round(T(roi[3]) * scale)
    roi_end_h = tv_round(T(roi[4]) * scale)
    roi_width = max(roi_end_w - roi_start_w + 1, 1)
    roi_height = max(roi_end_h - roi_start_h + 1, 1)
    bin_size_h = T(roi_height) / T(PH)
    bin_size_w = T(roi_width) / T(PW)
    windows = {}
    for ph in range(PH):
        for pw in range(PW):
            hstart = math.floor(T(ph) * bin_size_h)
            wstart = math.floor(T(pw) * bin_size_w)
            hend = math.ceil(T(ph + 1) * bin_size_h)
            wend = math.ceil(T(pw + 1) * bin_size_w)
            hstart = min(max(hstart + roi_start_h, 0), height)
            hend = min(max(hend + roi_start_h, 0), height)
            wstart = min(max(wstart + roi_start_w, 0), width)
            wend = min(max(wend + roi_start_w, 0), width)
            windows[ph, pw] = (hstart, hend, wstart, wend)
    return windows


def tv_roi_pool(input, rois, output_size, spatial_scale=1.0, differentiable=False):
    """torchvision's roi_pool_forward_kernel_impl. Returns (output, argmax), both (K, C, PH, PW);
    argmax is the flat index h * W + w of the pixel chosen, -1 for an empty bin."""
    N, C, H, W = input.shape
    PH, PW = tv_pair(output_size)
    values = input.detach().tolist()
    read = tv_reader(input, differentiable, values)
    out, argmax = [], []
    for roi in rois.tolist():
        b = int(roi[0])
        windows = tv_roi_pool_windows(roi, H, W, (PH, PW), spatial_scale, input.dtype)
        roi_out, roi_arg = [], []
        for c in range(C):
            rows, arg_rows = [], []
            for ph in range(PH):
                row, arg_row = [], []
                for pw in range(PW):
                    hstart, hend, wstart, wend = windows[ph, pw]
                    is_empty = hend <= hstart or wend <= wstart
                    maxval = 0.0 if is_empty else -TV_FLT_MAX
                    maxidx = -1
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            if values[b][c][h][w] > maxval:
                                maxval = values[b][c][h][w]
                                maxidx = h * W + w
                    if maxidx >= 0:
                        row.append(read(b, c, maxidx // W, maxidx % W))
                    else:
                        row.append(input.new_tensor(maxval) if differentiable else maxval)
                    arg_row.append(maxidx)
                rows.append(row)
                arg_rows.append(arg_row)
            roi_out.append(rows)
            roi_arg.append(arg_rows)
        out.append(roi_out)
        argmax.append(roi_arg)
    K = len(out)
    return (tv_assemble(out, K, C, PH, PW, input, differentiable),
            torch.tensor(argmax, dtype=torch.int64).reshape(K, C, PH, PW))


def tv_roi_pool_backward(grad_output, rois, argmax, input_shape):
    """torchvision's roi_pool_backward_kernel_impl: each output's gradient to its argmax."""
    N, C, H, W = input_shape
    K, _, PH, PW = grad_output.shape
    g, a = grad_output.tolist(), argmax.tolist()
    grad = [[[0.0] * (H * W) for _ in range(C)] for _ in range(N)]
    for k, roi in enumerate(rois.tolist()):
        b = int(roi[0])
        for c in range(C):
            for ph in range(PH):
                for pw in range(PW):
                    if a[k][c][ph][pw] != -1:
                        grad[b][c][a[k][c][ph][pw]] += g[k][c][ph][pw]
    return torch.tensor(grad, dtype=torch.float64).reshape(N, C, H, W)


# ---------------------------------------------------------------- box IoU

def tv_box_iou(boxes1, boxes2):
    """IoU of every pair in Python floats; 0/0 -> nan (as torchvision's tensor division)."""
    out = []
    for a in boxes1.tolist():
        row = []
        for b in boxes2.tolist():
            area_a = (a[2] - a[0]) * (a[3] - a[1])
            area_b = (b[2] - b[0]) * (b[3] - b[1])
            iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
            ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
            inter = iw * ih
            union = area_a + area_b - inter
            if union == 0:
                row.append(math.nan if inter == 0 else math.copysign(math.inf, inter))
            else:
                row.append(inter / union)
        out.append(row)
    return torch.tensor(out, dtype=torch.float64).reshape(len(boxes1), len(boxes2))
