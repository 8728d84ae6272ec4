"""Region-of-interest pooling for two-stage detectors: RoI Pool, RoI Align, box IoU.

A detector's second stage classifies a few hundred candidate boxes (RoIs) that
cover parts of one shared feature map. RoI pooling turns each box, whatever its
size, into a fixed ``PH x PW`` grid of features:

    roi_pool    Fast R-CNN's RoI max pooling (Girshick, 2015, "Fast R-CNN"):
                the box is rounded to whole pixels and split into PH x PW
                integer windows, each max-pooled
    roi_align   Mask R-CNN's RoI Align (He, Gkioxari, Dollar & Girshick, 2017,
                "Mask R-CNN"): no rounding at all; each bin averages bilinear
                samples taken at exact fractional positions, which keeps the
                pooled features aligned with the box (what pixel-accurate masks
                need)
    RoIPool, RoIAlign   the same as nn.Modules
    box_iou     pairwise intersection over union (Jaccard index) of two box sets

All three are drop-in replacements for ``torchvision.ops`` (same signatures,
same box formats, the same numbers as torchvision's CPU kernels), written with
plain tensor operations and no Python loop over boxes, bins or samples, so
autograd supplies the gradients.

Boxes are ``(x1, y1, x2, y2)`` in input-image coordinates; ``spatial_scale``
maps them onto the feature map (1/16 for a stride-16 backbone). For the two
pooling ops, ``boxes`` is either a ``Tensor[K, 5]`` whose column 0 is the
index of the image in the batch, or a list of ``Tensor[L_i, 4]``, one per image
(image i of the batch gets the boxes of list entry i).

The graded bodies lie between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
the argument checks before them stay in the exercise.
"""
import math
import numbers

import torch
from torch import Tensor, nn

from .common import as_pair, check_tensor, is_int


def _check_spatial_scale(spatial_scale, name: str) -> float:
    if (not isinstance(spatial_scale, numbers.Real) or isinstance(spatial_scale, bool)
            or not math.isfinite(spatial_scale) or spatial_scale <= 0):
        raise ValueError(f"{name}: spatial_scale must be a positive finite number (feature-map "
                         f"pixels per image pixel, e.g. 1/16), got {spatial_scale!r}")
    return float(spatial_scale)


def _check_sampling_ratio(sampling_ratio, name: str) -> None:
    if not is_int(sampling_ratio):
        raise ValueError(f"{name}: sampling_ratio must be an int (samples per bin along each "
                         f"axis; <= 0 for adaptive sampling), got {sampling_ratio!r}")


def _check_aligned(aligned, name: str) -> None:
    if not isinstance(aligned, bool):
        raise ValueError(f"{name}: aligned must be True or False, got {aligned!r}")


def _check_input(input, name: str) -> tuple:
    check_tensor(input, name, dim=4, layout="(N, C, H, W)")
    if input.shape[2] < 1 or input.shape[3] < 1:
        raise ValueError(f"{name}: input must have H, W >= 1, got {tuple(input.shape)}")
    return tuple(input.shape)


def _as_rois(boxes, input: Tensor, name: str) -> Tensor:
    """Boxes in either format as a ``(K, 5)`` tensor ``(batch index, x1, y1, x2, y2)``.

    Checks the shapes and dtypes (the input's, as torchvision's kernels require),
    that every coordinate is finite and every batch index an integer in
    ``[0, N - 1]``. The result is detached: boxes receive no gradient (as in
    torchvision, whose backward returns none for them).
    """
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            hint = ""
            if boxes.dim() == 2 and boxes.shape[1] == 4:
                hint = (": a single tensor needs the batch index in column 0, "
                        "(batch_index, x1, y1, x2, y2); for the (L, 4) boxes of one image "
                        "pass a list, [boxes]")
            raise ValueError(f"{name}: a boxes tensor must have shape (K, 5), got "
                             f"{tuple(boxes.shape)}{hint}")
        rois = boxes
    elif isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[1] != 4:
                got = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
                raise ValueError(f"{name}: boxes[{i}] must be a tensor of shape (L, 4) "
                                 f"(x1, y1, x2, y2), got {got}")
            if b.dtype != input.dtype:
                raise TypeError(f"{name}: boxes[{i}] dtype {b.dtype} differs from input dtype "
                                f"{input.dtype}")
        if len(boxes) == 0:
            rois = input.new_zeros((0, 5))
        else:
            counts = torch.tensor([len(b) for b in boxes], device=input.device)
            index = torch.repeat_interleave(torch.arange(len(boxes), device=input.device), counts)
            rois = torch.cat([index[:, None].to(input.dtype), torch.cat(list(boxes))], dim=1)
    else:
        raise TypeError(f"{name}: boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got "
                        f"{type(boxes).__name__}")
    if rois.dtype != input.dtype:
        raise TypeError(f"{name}: boxes dtype {rois.dtype} differs from input dtype {input.dtype}")
    if rois.device != input.device:
        raise ValueError(f"{name}: boxes are on {rois.device}, input on {input.device}")
    rois = rois.detach()
    if rois.numel():
        if not bool(torch.isfinite(rois).all()):
            raise ValueError(f"{name}: boxes contain a non-finite coordinate (nan or inf)")
        batch = rois[:, 0]
        bad = (batch != batch.round()) | (batch < 0) | (batch > input.shape[0] - 1)
        if bool(bad.any()):
            raise ValueError(f"{name}: batch index {batch[bad][0].item()!r} is not an integer in "
                             f"[0, {input.shape[0] - 1}] (input has N={input.shape[0]} images)")
    return rois


def roi_pool(input: Tensor, boxes, output_size, spatial_scale: float = 1.0) -> Tensor:
    """RoI max pooling of Fast R-CNN (Girshick, 2015), as ``torchvision.ops.roi_pool``.

    Each box is first snapped to whole feature-map pixels: its corners
    ``x1 * spatial_scale``, ... are rounded half away from zero (C's ``round``:
    2.5 -> 3, -0.5 -> -1; ``torch.round`` would round half to even), and the
    end pixel is inclusive, so the RoI is ``roi_w = max(x2 - x1 + 1, 1)`` by
    ``roi_h = max(y2 - y1 + 1, 1)`` pixels (a malformed box with x2 < x1 counts
    as one pixel wide). Bin ``(ph, pw)`` covers the integer window

        rows [y1 + floor(ph * roi_h / PH), y1 + ceil((ph + 1) * roi_h / PH))
        cols [x1 + floor(pw * roi_w / PW), x1 + ceil((pw + 1) * roi_w / PW))

    (bin sizes computed in the input's precision), clipped to the image; the
    windows of neighbouring bins may overlap by a pixel. The output is the
    maximum over the window, or 0 if the clipped window is empty (a box partly
    or wholly outside the image). The gradient of each output goes to its
    argmax only, the first maximal pixel in row-major order when several tie;
    an empty bin passes none.

    Args:
        input: ``(N, C, H, W)``, floating point, H, W >= 1.
        boxes: ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)``, or a list
            of ``Tensor[L_i, 4]`` rows ``(x1, y1, x2, y2)`` for image i; same
            dtype as input, finite; batch indices integers in ``[0, N - 1]``.
            A list is stacked in order (K = sum of L_i). Boxes get no gradient.
        output_size: ``PH`` (square) or ``(PH, PW)``, positive ints.
        spatial_scale: positive number mapping box coordinates onto the feature
            map (e.g. 1/16 for a stride-16 backbone).

    Returns:
        ``(K, C, PH, PW)``, input's dtype; ``(0, C, PH, PW)`` for no boxes.
    """
    N, C, H, W = _check_input(input, "roi_pool")
    PH, PW = as_pair(output_size, "output_size", 1, "roi_pool")
    spatial_scale = _check_spatial_scale(spatial_scale, "roi_pool")
    rois = _as_rois(boxes, input, "roi_pool")  # (K, 5), input's dtype
    ### BEGIN SOLUTION
    K, dtype = rois.shape[0], input.dtype
    batch = rois[:, 0].long()

    def round_half_away_from_zero(v: Tensor) -> Tensor:
        # v - trunc(v) is exact, unlike floor(v + 0.5) (0.49999997 + 0.5 is 1.0 in float32)
        t = v.trunc()
        return torch.where((v - t).abs() >= 0.5, t + v.sign(), t)

    x1, y1, x2, y2 = (round_half_away_from_zero(rois[:, i] * spatial_scale).long()
                      for i in range(1, 5))
    roi_w = (x2 - x1 + 1).clamp(min=1)  # end inclusive; malformed boxes: 1 pixel
    roi_h = (y2 - y1 + 1).clamp(min=1)

    def windows(start: Tensor, length: Tensor, P: int, size: int):
        """Every bin's pixel window along one axis, padded to the widest bin.

        Returns ``index`` and ``inside``, both ``(K, P, B)``: pixel ``index[k, p, j]``
        belongs to bin p of RoI k iff ``inside[k, p, j]`` (indices clamped into the image).
        """
        bin_size = length.to(dtype)[:, None] / P                  # (K, 1)
        p = torch.arange(P, dtype=dtype, device=input.device)
        lo = (p * bin_size).floor().long() + start[:, None]         # (K, P)
        hi = ((p + 1) * bin_size).ceil().long() + start[:, None]
        lo, hi = lo.clamp(0, size), hi.clamp(0, size)               # clip to the image
        B = max(int((hi - lo).max()), 1) if K else 1
        index = lo[..., None] + torch.arange(B, device=input.device)  # (K, P, B)
        return index.clamp(max=size - 1), index < hi[..., None]

    rows, row_inside = windows(y1, roi_h, PH, H)                    # (K, PH, BH)
    cols, col_inside = windows(x1, roi_w, PW, W)                    # (K, PW, BW)
    # (K, PH, PW, BH, BW): flat pixel index into (N*H*W) and whether it is in the bin
    flat = ((batch[:, None, None, None, None] * H + rows[:, :, None, :, None]) * W
            + cols[:, None, :, None, :])
    inside = row_inside[:, :, None, :, None] & col_inside[:, None, :, None, :]
    pixels = input.permute(0, 2, 3, 1).reshape(N * H * W, C)        # one row per pixel
    values = pixels[flat].masked_fill(~inside[..., None], -math.inf)  # (K, PH, PW, BH, BW, C)
    # max over the window in row-major order; its gradient goes to the first maximum
    best = values.flatten(3, 4).max(dim=3).values                   # (K, PH, PW, C)
    best = best.masked_fill(~inside.flatten(3).any(dim=3)[..., None], 0)  # empty bins read 0
    return best.permute(0, 3, 1, 2).contiguous()
    ### END SOLUTION


def roi_align(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """RoI Align of Mask R-CNN (He et al., 2017), as ``torchvision.ops.roi_align``.

    Nothing is rounded. A box becomes ``start = x1 * spatial_scale - offset``
    etc., with ``offset = 0.5`` if ``aligned`` else 0; ``roi_w = x2' - x1'``
    and ``roi_h`` likewise, clamped to at least 1 pixel only when
    ``aligned=False`` (the legacy default of torchvision; Detectron2 uses
    ``aligned=True``, where pixel centres sit at integer + 0.5 and a box
    smaller than a pixel stays small). The box is split into ``PH x PW`` bins of
    ``bin_h = roi_h / PH`` by ``bin_w = roi_w / PW``; bin (ph, pw) averages a
    ``gh x gw`` grid of samples at the centres of equal sub-cells,

        y = start_h + ph * bin_h + (iy + 0.5) * bin_h / gh,   iy = 0 .. gh - 1

    (x likewise), with ``gh = gw = sampling_ratio`` if it is positive, else
    ``gh = ceil(roi_h / PH)`` and ``gw = ceil(roi_w / PW)`` for each RoI
    (adaptive; a box with roi_h <= 0, possible only when aligned, has no
    samples and gives 0). Each sample is read by bilinear interpolation,
    torchvision's way: a sample outside ``[-1, H] x [-1, W]`` reads 0; otherwise
    a coordinate in ``[-1, 0]`` snaps to 0 and one at or beyond ``H - 1`` (resp.
    W - 1) snaps to the last row (column), then the value mixes the four
    neighbouring pixels with weights ``(1-ly)(1-lx), (1-ly)lx, ly(1-lx), ly lx``.
    The gradient of a sample goes to exactly those four pixels with those
    weights (divided by gh * gw).

    Vectorised: the samples of all RoIs are padded to the largest grid and the
    extra ones weighted 0.

    Args:
        input: ``(N, C, H, W)``, floating point, H, W >= 1.
        boxes: ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)``, or a list
            of ``Tensor[L_i, 4]`` rows ``(x1, y1, x2, y2)`` for image i; same
            dtype as input, finite; batch indices integers in ``[0, N - 1]``.
            Boxes may lie partly or wholly outside the image; they get no gradient.
        output_size: ``PH`` (square) or ``(PH, PW)``, positive ints.
        spatial_scale: positive number mapping box coordinates onto the feature map.
        sampling_ratio: int; samples per bin along each axis if > 0, adaptive if <= 0.
        aligned: bool; shift the box by -0.5 pixel (and do not clamp its size).

    Returns:
        ``(K, C, PH, PW)``, input's dtype; ``(0, C, PH, PW)`` for no boxes.
    """
    N, C, H, W = _check_input(input, "roi_align")
    PH, PW = as_pair(output_size, "output_size", 1, "roi_align")
    spatial_scale = _check_spatial_scale(spatial_scale, "roi_align")
    _check_sampling_ratio(sampling_ratio, "roi_align")
    _check_aligned(aligned, "roi_align")
    rois = _as_rois(boxes, input, "roi_align")  # (K, 5), input's dtype
    ### BEGIN SOLUTION
    K, dtype = rois.shape[0], input.dtype
    batch = rois[:, 0].long()
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # legacy: force malformed RoIs to at least 1 x 1 pixel
        roi_w, roi_h = roi_w.clamp(min=1), roi_h.clamp(min=1)
    bin_w, bin_h = roi_w / PW, roi_h / PH                            # (K,)
    if sampling_ratio > 0:
        grid_w = grid_h = torch.full((K,), sampling_ratio, device=input.device)
    else:  # ceil(roi / P) samples per bin, per RoI (<= 0 for an empty aligned RoI)
        grid_w, grid_h = bin_w.ceil().long(), bin_h.ceil().long()

    def samples(start: Tensor, bin_size: Tensor, grid: Tensor, P: int, size: int):
        """Bilinear neighbours and weights of every sample along one axis.

        Returns ``index`` and ``weight``, both ``(K, P, G, 2)`` for the largest
        grid G: the low and high neighbour (row or column) of each sample and
        their weights, 0 for a sample outside ``[-1, size]`` and for padding
        beyond a RoI's own grid.
        """
        G = max(int(grid.max()), 1) if K else 1
        p = torch.arange(P, dtype=dtype, device=input.device)[:, None]   # (P, 1)
        i = torch.arange(G, dtype=dtype, device=input.device)            # (G,)
        start, bin_size = start[:, None, None], bin_size[:, None, None]  # (K, 1, 1)
        n = grid.clamp(min=1).to(dtype)[:, None, None]
        pos = start + p * bin_size + (i + 0.5) * bin_size / n            # (K, P, G)
        valid = (i < grid[:, None, None]) & (pos >= -1) & (pos <= size)
        pos = torch.where(valid, pos, 0).clamp(min=0)                    # (-1, 0] -> 0
        low = pos.floor().long()
        last = low >= size - 1                                           # [size-1, size] -> size-1
        low = low.clamp(max=size - 1)
        high = torch.where(last, low, low + 1)
        frac = torch.where(last, 0, pos - low)
        return torch.stack([low, high], 3), torch.stack([1 - frac, frac], 3) * valid[..., None]

    ys, wys = samples(y1, bin_h, grid_h, PH, H)                       # (K, PH, GH, 2)
    xs, wxs = samples(x1, bin_w, grid_w, PW, W)                       # (K, PW, GW, 2)

    def rows(t: Tensor) -> Tensor:  # (K, PH, 1, GH, 2, 1, 1)
        return t[:, :, None, :, :, None, None]

    def cols(t: Tensor) -> Tensor:  # (K, 1, PW, 1, 1, GW, 2)
        return t[:, None, :, None, None, :, :]

    # bin (k, ph, pw) is a bag of (GH*2) x (GW*2) pixels: every neighbour row
    # with every neighbour column, weighted by the product of their weights
    image = batch.view(K, 1, 1, 1, 1, 1, 1)
    count = (grid_h * grid_w).clamp(min=1).to(dtype).view(K, 1, 1, 1, 1, 1, 1)
    bags = (K * PH * PW, 4 * ys.shape[2] * xs.shape[2])
    pixel = ((image * H + rows(ys)) * W + cols(xs)).reshape(bags)
    weight = (rows(wys) * cols(wxs) / count).reshape(bags)
    pixels = input.permute(0, 2, 3, 1).reshape(N * H * W, C)           # one row per pixel
    # one fused gather-multiply-add for all bags: no (bags, samples, C) intermediate
    out = torch.nn.functional.embedding_bag(pixel, pixels, per_sample_weights=weight, mode="sum")
    return out.view(K, PH, PW, C).permute(0, 3, 1, 2).contiguous()
    ### END SOLUTION


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over union of two sets of boxes, as ``torchvision.ops.box_iou``.

    ``iou[i, j] = |A_i n B_j| / |A_i u B_j|`` with areas ``(x2 - x1) * (y2 - y1)``
    (continuous coordinates: no +1) and the union ``area_i + area_j - inter``.
    Boxes are expected to satisfy ``x1 <= x2`` and ``y1 <= y2``; like
    torchvision, areas are not clamped, so a reversed box has a negative area
    and a meaningless IoU. Degenerate boxes, mirrored exactly: a zero-area box
    against a box of positive area gives 0; two zero-area boxes (even the same
    one) give ``0 / 0 = nan``, as in torchvision. Integer boxes are computed in
    integers and give a float (default dtype) IoU; float16/bfloat16 boxes are
    computed in float32 (torchvision's upcast against overflow).

    Args:
        boxes1: ``(N, 4)`` rows ``(x1, y1, x2, y2)``, float or integer.
        boxes2: ``(M, 4)``, same format.

    Returns:
        ``(N, M)``; ``(0, M)`` or ``(N, 0)`` when a set is empty.
    """
    for name, b in [("boxes1", boxes1), ("boxes2", boxes2)]:
        if not isinstance(b, Tensor):
            raise TypeError(f"box_iou: {name} must be a torch.Tensor, got {type(b).__name__}")
        if b.dtype == torch.bool or b.is_complex():
            raise TypeError(f"box_iou: {name} must hold real (float or integer) coordinates, "
                            f"got {b.dtype}")
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"box_iou: {name} must have shape (N, 4) as (x1, y1, x2, y2), got "
                             f"{tuple(b.shape)}")
    ### BEGIN SOLUTION
    def upcast(t: Tensor) -> Tensor:  # guard the products against overflow
        if t.is_floating_point():
            return t if t.dtype in (torch.float32, torch.float64) else t.float()
        return t if t.dtype in (torch.int32, torch.int64) else t.int()

    def area(b: Tensor) -> Tensor:
        b = upcast(b)
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])   # (N, M, 2) top-left of the overlap
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])   # (N, M, 2) bottom-right
    wh = upcast(rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area(boxes1)[:, None] + area(boxes2) - inter
    return inter / union
    ### END SOLUTION


class RoIPool(nn.Module):
    """``roi_pool`` as a module, as ``torchvision.ops.RoIPool``.

    ``forward(input, rois)``: ``input (N, C, H, W)``, ``rois`` a ``Tensor[K, 5]``
    or a list of ``Tensor[L_i, 4]`` -> ``(K, C, PH, PW)``. No parameters.
    ``repr``: ``RoIPool(output_size=7, spatial_scale=0.0625)``, torchvision's.
    """

    def __init__(self, output_size, spatial_scale: float):
        super().__init__()
        as_pair(output_size, "output_size", 1, "RoIPool")
        _check_spatial_scale(spatial_scale, "RoIPool")
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


class RoIAlign(nn.Module):
    """``roi_align`` as a module, as ``torchvision.ops.RoIAlign`` (``aligned=False`` by default).

    ``forward(input, rois)``: ``input (N, C, H, W)``, ``rois`` a ``Tensor[K, 5]``
    or a list of ``Tensor[L_i, 4]`` -> ``(K, C, PH, PW)``. No parameters. ``repr``:
    ``RoIAlign(output_size=(7, 7), spatial_scale=0.0625, sampling_ratio=2, aligned=True)``.
    """

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int,
                 aligned: bool = False):
        super().__init__()
        as_pair(output_size, "output_size", 1, "RoIAlign")
        _check_spatial_scale(spatial_scale, "RoIAlign")
        _check_sampling_ratio(sampling_ratio, "RoIAlign")
        _check_aligned(aligned, "RoIAlign")
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")
