"""Slow, independent references for solutions/deformable.py: oracles, not course code.

Line-by-line ports, in Python loops over Python floats, of the C++ kernels that
define the semantics (torchvision is not installed here):

- ``tv_bilinear``, ``tv_coordinate_weight``: ``bilinear_interpolate`` and
  ``get_coordinate_weight`` of torchvision/csrc/ops/cpu/deform_conv2d_kernel.cpp.
- ``deform_conv2d_loop``: that file's ``deformable_im2col_kernel`` followed by
  the per-weight-group ``addmm`` of ``deform_conv2d_forward_kernel``, written
  out as sums (no blocks of 32 images: the result does not depend on them).
- ``deform_conv2d_backward_loop``: its backward: ``grad_out`` to columns
  (``weight^T @ grad_out``), ``deformable_col2im_kernel`` (grad input),
  ``deformable_col2im_coord_kernel`` (grad offset and mask), and
  ``backward_gradient_parameters`` (grad weight), grad bias = sum of grad_out.
- ``roi_align_loop``: ``roi_align_forward_kernel_impl`` with
  ``pre_calc_for_bilinear_interpolate`` (torchvision/csrc/ops/cpu/
  roi_align_kernel.cpp, roi_align_common.h). Given ``offset``, every bin's
  start moves by ``gamma * roi_size * offset`` before sampling, as mmcv's
  ``deform_roi_pool_forward_cuda_kernel``, but with torchvision's
  aligned=False box rules and this course's (dy, dx) channel order (mmcv
  reads channel 0 as dx).
- ``roi_align_backward_loop``: ``roi_align_backward_kernel_impl`` with
  ``bilinear_interpolate_gradient`` (grad of the input; same offset rule).
"""
import math

import torch

from autograder.oracles.roi import tv_bilinear as roi_align_taps
from autograder.oracles.roi import tv_pair, tv_roi_geometry, tv_sample_y_x


# ================================================================ deformable conv

def tv_bilinear(im, height, width, h, w):
    """torchvision deform-conv ``bilinear_interpolate`` on a nested list im[H][W]."""
    if h <= -1 or height <= h or w <= -1 or width <= w:
        return 0.0
    h_low = math.floor(h)
    w_low = math.floor(w)
    h_high = h_low + 1
    w_high = w_low + 1
    lh = h - h_low
    lw = w - w_low
    hh = 1 - lh
    hw = 1 - lw
    v1 = im[h_low][w_low] if (h_low >= 0 and w_low >= 0) else 0.0
    v2 = im[h_low][w_high] if (h_low >= 0 and w_high <= width - 1) else 0.0
    v3 = im[h_high][w_low] if (h_high <= height - 1 and w_low >= 0) else 0.0
    v4 = im[h_high][w_high] if (h_high <= height - 1 and w_high <= width - 1) else 0.0
    w1, w2, w3, w4 = hh * hw, hh * lw, lh * hw, lh * lw
    return w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4


def tv_coordinate_weight(im, height, width, y, x, is_y_direction):
    """torchvision ``get_coordinate_weight``: d(bilinear)/dy (or /dx) at (y, x)."""
    y_l = math.floor(y)
    x_l = math.floor(x)
    y_h = y_l + 1
    x_h = x_l + 1
    valid_y_l = 0 <= y_l < height
    valid_y_h = 0 <= y_h < height
    valid_x_l = 0 <= x_l < width
    valid_x_h = 0 <= x_h < width
    v_yx = im[y_l][x_l] if (valid_y_l and valid_x_l) else 0.0
    v_yX = im[y_l][x_h] if (valid_y_l and valid_x_h) else 0.0
    v_Yx = im[y_h][x_l] if (valid_y_h and valid_x_l) else 0.0
    v_YX = im[y_h][x_h] if (valid_y_h and valid_x_h) else 0.0
    if is_y_direction:
        dx = x - x_l
        return dx * (v_YX - v_yX) + (1 - dx) * (v_Yx - v_yx)
    dy = y - y_l
    return dy * (v_YX - v_Yx) + (1 - dy) * (v_yX - v_yx)


def _geometry(input, offset, weight, stride, padding, dilation):
    N, C, H, W = input.shape
    O, Cg, KH, KW = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = tv_pair(stride), tv_pair(padding), tv_pair(dilation)
    Ho = (H + 2 * ph - (dh * (KH - 1) + 1)) // sh + 1
    Wo = (W + 2 * pw - (dw * (KW - 1) + 1)) // sw + 1
    n_weight_grps = C // Cg
    n_offset_grps = offset.shape[1] // (2 * KH * KW)
    return (N, C, H, W, O, Cg, KH, KW, sh, sw, ph, pw, dh, dw, Ho, Wo, n_weight_grps,
            n_offset_grps)


def deform_conv2d_columns(input, offset, weight, stride=1, padding=0, dilation=1, mask=None):
    """``deformable_im2col_kernel``: columns[c*KH*KW + i*KW + j][b][oy][ox] (nested lists)."""
    (N, C, H, W, O, Cg, KH, KW, sh, sw, ph, pw, dh, dw, Ho, Wo, _,
     n_offset_grps) = _geometry(input, offset, weight, stride, padding, dilation)
    x, off = input.tolist(), offset.tolist()
    msk = None if mask is None else mask.tolist()
    c_per_offset_grp = C // n_offset_grps
    cols = [[[[0.0] * Wo for _ in range(Ho)] for _ in range(N)] for _ in range(C * KH * KW)]
    for in_c in range(C):
        grp_idx = in_c // c_per_offset_grp
        for b in range(N):
            for out_y in range(Ho):
                for out_x in range(Wo):
                    for i in range(KH):
                        for j in range(KW):
                            mask_idx = i * KW + j
                            offset_idx = 2 * mask_idx
                            base = grp_idx * 2 * KH * KW
                            mask_value = 1.0
                            if msk is not None:
                                mask_value = msk[b][grp_idx * KH * KW + mask_idx][out_y][out_x]
                            offset_h = off[b][base + offset_idx][out_y][out_x]
                            offset_w = off[b][base + offset_idx + 1][out_y][out_x]
                            y = (out_y * sh - ph) + i * dh + offset_h
                            xx = (out_x * sw - pw) + j * dw + offset_w
                            cols[in_c * KH * KW + mask_idx][b][out_y][out_x] = \
                                mask_value * tv_bilinear(x[b][in_c], H, W, y, xx)
    return cols


def deform_conv2d_loop(input, offset, weight, bias=None, stride=1, padding=0, dilation=1,
                       mask=None):
    """torchvision.ops.deform_conv2d by its CPU kernel, in float64 Python arithmetic."""
    (N, C, H, W, O, Cg, KH, KW, sh, sw, ph, pw, dh, dw, Ho, Wo, n_weight_grps,
     _) = _geometry(input, offset, weight, stride, padding, dilation)
    cols = deform_conv2d_columns(input, offset, weight, stride, padding, dilation, mask)
    wt = weight.tolist()
    bs = None if bias is None else bias.tolist()
    opg = O // n_weight_grps
    rows_per_grp = Cg * KH * KW
    out = [[[[0.0] * Wo for _ in range(Ho)] for _ in range(O)] for _ in range(N)]
    for b in range(N):
        for o in range(O):
            g = o // opg
            for oy in range(Ho):
                for ox in range(Wo):
                    acc = 0.0
                    for r in range(rows_per_grp):  # weight[g].flatten(1) @ columns[g]
                        c, k = divmod(r, KH * KW)
                        acc += wt[o][c][k // KW][k % KW] * cols[g * rows_per_grp + r][b][oy][ox]
                    out[b][o][oy][ox] = acc + (0.0 if bs is None else bs[o])
    return torch.tensor(out, dtype=torch.float64).reshape(N, O, Ho, Wo)


def deform_conv2d_backward_loop(grad_out, input, offset, weight, stride=1, padding=0,
                                dilation=1, mask=None):
    """(grad_input, grad_offset, grad_mask or None, grad_weight, grad_bias) by torchvision's
    backward kernels, in float64 Python arithmetic."""
    (N, C, H, W, O, Cg, KH, KW, sh, sw, ph, pw, dh, dw, Ho, Wo, n_weight_grps,
     n_offset_grps) = _geometry(input, offset, weight, stride, padding, dilation)
    x, off, wt, go = input.tolist(), offset.tolist(), weight.tolist(), grad_out.tolist()
    msk = None if mask is None else mask.tolist()
    KK = KH * KW
    opg = O // n_weight_grps
    c_per_offset_grp = C // n_offset_grps

    def point(b, grp, mask_idx, out_y, out_x):
        i, j = divmod(mask_idx, KW)
        offset_h = off[b][grp * 2 * KK + 2 * mask_idx][out_y][out_x]
        offset_w = off[b][grp * 2 * KK + 2 * mask_idx + 1][out_y][out_x]
        mask_value = 1.0 if msk is None else msk[b][grp * KK + mask_idx][out_y][out_x]
        y = (out_y * sh - ph) + i * dh + offset_h
        xx = (out_x * sw - pw) + j * dw + offset_w
        return y, xx, mask_value

    # columns = weight[g].flatten(1).T @ grad_out[g]: col[c*KK + k][b][oy][ox]
    col = [[[[0.0] * Wo for _ in range(Ho)] for _ in range(N)] for _ in range(C * KK)]
    for c in range(C):
        g, cl = divmod(c, Cg)
        for k in range(KK):
            for b in range(N):
                for oy in range(Ho):
                    for ox in range(Wo):
                        col[c * KK + k][b][oy][ox] = sum(
                            wt[g * opg + o][cl][k // KW][k % KW] * go[b][g * opg + o][oy][ox]
                            for o in range(opg))

    # deformable_col2im_kernel: scatter into the (up to) four neighbours
    grad_input = [[[[0.0] * W for _ in range(H)] for _ in range(C)] for _ in range(N)]
    for c in range(C):
        grp = c // c_per_offset_grp
        for k in range(KK):
            for b in range(N):
                for oy in range(Ho):
                    for ox in range(Wo):
                        y, xx, mask_value = point(b, grp, k, oy, ox)
                        for ddy in (-1, 0, 1):
                            for ddx in (-1, 0, 1):
                                yp = int(y) + ddy  # C++ int(): truncation toward zero
                                xp = int(xx) + ddx
                                if (0 <= yp < H and 0 <= xp < W and abs(y - yp) < 1
                                        and abs(xx - xp) < 1):
                                    wgt = (1 - abs(y - yp)) * (1 - abs(xx - xp))
                                    grad_input[b][c][yp][xp] += \
                                        mask_value * wgt * col[c * KK + k][b][oy][ox]

    # deformable_col2im_coord_kernel: grad of each offset (and mask) value
    grad_offset = [[[[0.0] * Wo for _ in range(Ho)] for _ in range(2 * n_offset_grps * KK)]
                   for _ in range(N)]
    grad_mask = [[[[0.0] * Wo for _ in range(Ho)] for _ in range(n_offset_grps * KK)]
                 for _ in range(N)]
    for b in range(N):
        for grp in range(n_offset_grps):
            for k in range(KK):
                for oy in range(Ho):
                    for ox in range(Wo):
                        y, xx, mask_value = point(b, grp, k, oy, ox)
                        gy = gx = gm = 0.0
                        for c in range(grp * c_per_offset_grp, (grp + 1) * c_per_offset_grp):
                            cv = col[c * KK + k][b][oy][ox]
                            im = x[b][c]
                            gy += mask_value * tv_coordinate_weight(im, H, W, y, xx, True) * cv
                            gx += mask_value * tv_coordinate_weight(im, H, W, y, xx, False) * cv
                            gm += cv * tv_bilinear(x[b][c], H, W, y, xx)
                        grad_offset[b][grp * 2 * KK + 2 * k][oy][ox] = gy
                        grad_offset[b][grp * 2 * KK + 2 * k + 1][oy][ox] = gx
                        grad_mask[b][grp * KK + k][oy][ox] = gm

    # backward_gradient_parameters: grad_weight[g] = grad_out[g] @ columns_fwd[g].T
    cols_fwd = deform_conv2d_columns(input, offset, weight, stride, padding, dilation, mask)
    grad_weight = [[[[0.0] * KW for _ in range(KH)] for _ in range(Cg)] for _ in range(O)]
    for o in range(O):
        g = o // opg
        for cl in range(Cg):
            for k in range(KK):
                grad_weight[o][cl][k // KW][k % KW] = sum(
                    go[b][o][oy][ox] * cols_fwd[(g * Cg + cl) * KK + k][b][oy][ox]
                    for b in range(N) for oy in range(Ho) for ox in range(Wo))
    grad_bias = [sum(go[b][o][oy][ox] for b in range(N) for oy in range(Ho) for ox in range(Wo))
                 for o in range(O)]

    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return (t(grad_input).reshape(input.shape), t(grad_offset).reshape(offset.shape),
            None if mask is None else t(grad_mask).reshape(mask.shape),
            t(grad_weight).reshape(weight.shape), t(grad_bias).reshape(O))


# ================================================================ RoI Align / deformable RoI pooling

def _bin_samples(roi, n, ph_, pw_, spatial_scale, PH, PW, sampling_ratio, aligned, off, gamma):
    """The sample points of bin (ph_, pw_) of RoI n, and their count: RoI Align's geometry
    (the kernel port's), with the bin moved by its offset if ``off`` is given."""
    _, start_h, start_w, bin_h, bin_w, grid_h, grid_w = tv_roi_geometry(
        roi, float, spatial_scale, PH, PW, sampling_ratio, aligned)
    if off is not None:  # deformable: move the bin by gamma * roi size (mmcv, (dy, dx) order)
        start_h += gamma * bin_h * PH * off[n][0][ph_][pw_]
        start_w += gamma * bin_w * PW * off[n][1][ph_][pw_]
    points = [tv_sample_y_x(float, start_h, start_w, bin_h, bin_w, grid_h, grid_w, ph_, pw_, iy, ix)
              for iy in range(grid_h) for ix in range(grid_w)]
    return points, max(grid_h * grid_w, 1)


def roi_align_loop(input, rois, spatial_scale, PH, PW, sampling_ratio, aligned=False,
                   offset=None, gamma=0.1):
    """torchvision.ops.roi_align by its CPU kernel (plus an optional deformable bin offset)."""
    N, C, H, W = input.shape
    x, rs = input.tolist(), rois.tolist()
    off = None if offset is None else offset.tolist()
    out = [[[[0.0] * PW for _ in range(PH)] for _ in range(C)] for _ in range(len(rs))]
    for n, roi in enumerate(rs):
        b = int(roi[0])
        for ph_ in range(PH):
            for pw_ in range(PW):
                points, count = _bin_samples(roi, n, ph_, pw_, spatial_scale, PH, PW,
                                             sampling_ratio, aligned, off, gamma)
                pre = [roi_align_taps(float, H, W, y, xx) for y, xx in points]
                for c in range(C):
                    acc = 0.0
                    for pc in pre:
                        acc += sum(w * x[b][c][r][s] for w, r, s in pc)
                    out[n][c][ph_][pw_] = acc / count
    return torch.tensor(out, dtype=torch.float64).reshape(len(rs), C, PH, PW)


def roi_align_backward_loop(grad_out, input_shape, rois, spatial_scale, PH, PW, sampling_ratio,
                            aligned=False, offset=None, gamma=0.1):
    """Gradient of roi_align_loop w.r.t. its input (roi_align_backward_kernel_impl)."""
    N, C, H, W = input_shape
    rs, go = rois.tolist(), grad_out.tolist()
    off = None if offset is None else offset.tolist()
    grad = [[[[0.0] * W for _ in range(H)] for _ in range(C)] for _ in range(N)]
    for n, roi in enumerate(rs):
        b = int(roi[0])
        for c in range(C):
            for ph_ in range(PH):
                for pw_ in range(PW):
                    points, count = _bin_samples(roi, n, ph_, pw_, spatial_scale, PH, PW,
                                                 sampling_ratio, aligned, off, gamma)
                    for y, xx in points:
                        for w, r, s in roi_align_taps(float, H, W, y, xx):  # [] outside
                            grad[b][c][r][s] += go[n][c][ph_][pw_] * w / count
    return torch.tensor(grad, dtype=torch.float64).reshape(N, C, H, W)
