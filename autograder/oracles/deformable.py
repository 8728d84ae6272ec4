"""Independent deformable ops, built on F.grid_sample and loops over taps and bins.

``F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=True)``
reads pixel (i, j) at integer coordinates and lets every neighbour outside
the image contribute 0: deformable convolution's bilinear rule. The hidden
tests of the deformable exercise compare submissions with these functions;
the test suite and ``bench/deformable.py`` use them too.
"""
import math

import torch
import torch.nn.functional as F


def grid_bilinear(input, y, x):
    """Sample ``(N, C, H, W)`` at points ``y, x`` of shape ``(N, *S)``: ``(N, C, *S)``.

    H and W must be at least 2 (align_corners=True normalises by H - 1, W - 1).
    """
    N, C, H, W = input.shape
    grid = torch.stack([2 * x / (W - 1) - 1, 2 * y / (H - 1) - 1], dim=-1).reshape(N, -1, 1, 2)
    sampled = F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)
    return sampled.reshape(N, C, *y.shape[1:])


def _as_pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def tap_loop_deform_conv2d(input, offset, weight, bias=None, stride=1, padding=0, dilation=1,
                           mask=None):
    """torchvision.ops.deform_conv2d, one kernel tap and offset group at a time."""
    N, C, H, W = input.shape
    C_out, C_per_group, KH, KW = weight.shape
    groups, G = C // C_per_group, offset.shape[1] // (2 * KH * KW)
    (sH, sW), (pH, pW), (dH, dW) = _as_pair(stride), _as_pair(padding), _as_pair(dilation)
    H_out, W_out = offset.shape[2:]
    rows = (torch.arange(H_out, dtype=input.dtype) * sH - pH).view(1, H_out, 1)
    cols = (torch.arange(W_out, dtype=input.dtype) * sW - pW).view(1, 1, W_out)
    columns = input.new_zeros(N, C, KH * KW, H_out * W_out)
    for g in range(G):
        channels = slice(g * C // G, (g + 1) * C // G)
        for kh in range(KH):
            for kw in range(KW):
                k = kh * KW + kw
                y = rows + kh * dH + offset[:, g * 2 * KH * KW + 2 * k]
                x = cols + kw * dW + offset[:, g * 2 * KH * KW + 2 * k + 1]
                sampled = grid_bilinear(input[:, channels], y, x)  # (N, C/G, H_out, W_out)
                if mask is not None:
                    sampled = sampled * mask[:, g * KH * KW + k].unsqueeze(1)
                columns[:, channels, k] = sampled.flatten(2)
    columns = columns.view(N, groups, C_per_group * KH * KW, H_out * W_out)
    out = weight.view(groups, C_out // groups, -1) @ columns
    out = out.view(N, C_out, H_out, W_out)
    return out if bias is None else out + bias.view(1, C_out, 1, 1)


def _roi_align_point(image, y, x):
    """RoI Align's rule for one point of a ``(C, H, W)`` image: 0 outside
    [-1, H] x [-1, W], else clamped into the image and interpolated."""
    C, H, W = image.shape
    if y < -1 or y > H or x < -1 or x > W:
        return image.new_zeros(C)
    y, x = min(max(y, 0.0), H - 1.0), min(max(x, 0.0), W - 1.0)
    y0, x0 = math.floor(y), math.floor(x)
    y1, x1 = min(y0 + 1, H - 1), min(x0 + 1, W - 1)
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * image[:, y0, x0] + (1 - ly) * lx * image[:, y0, x1]
            + ly * (1 - lx) * image[:, y1, x0] + ly * lx * image[:, y1, x1])


def loop_deform_roi_pool(input, rois, offset, output_size, spatial_scale=1.0, sampling_ratio=-1,
                         gamma=0.1):
    """Deformable RoI pooling on RoI Align (aligned=False) bins, box by box and bin by bin.

    ``rois``: ``(K, 5)`` (batch index, x1, y1, x2, y2); ``offset``: ``(K, 2, PH, PW)``
    normalised (dy, dx) or None. Returns ``(K, C, PH, PW)``.
    """
    PH, PW = _as_pair(output_size)
    out = input.new_zeros(len(rois), input.shape[1], PH, PW)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (v * spatial_scale for v in (x1, y1, x2, y2))
        roi_h, roi_w = max(y2 - y1, 1.0), max(x2 - x1, 1.0)
        bin_h, bin_w = roi_h / PH, roi_w / PW
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_h)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_w)
        for i in range(PH):
            for j in range(PW):
                dy = 0.0 if offset is None else gamma * roi_h * float(offset[k, 0, i, j])
                dx = 0.0 if offset is None else gamma * roi_w * float(offset[k, 1, i, j])
                total = 0
                for iy in range(gh):
                    for ix in range(gw):
                        total = total + _roi_align_point(
                            input[int(b)], y1 + dy + i * bin_h + (iy + 0.5) * bin_h / gh,
                            x1 + dx + j * bin_w + (ix + 0.5) * bin_w / gw)
                out[k, :, i, j] = total / (gh * gw)
    return out
