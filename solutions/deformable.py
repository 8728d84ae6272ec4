"""Deformable convolution and deformable RoI pooling.

A regular convolution reads its KH x KW taps on a fixed grid around each
output pixel. A deformable convolution adds a learned, fractional 2-D offset
to every tap at every output position, reads the input there by bilinear
interpolation, and otherwise is the same weighted sum; the offsets come from
an ordinary convolution on the same input, so the sampling grid bends to the
content (Dai et al., 2017, "Deformable Convolutional Networks", DCNv1).
DCNv2 (Zhu et al., 2019, "Deformable ConvNets v2: More Deformable, Better
Results") also predicts a modulation scalar per tap that scales each sample.
Deformable RoI pooling shifts every bin of RoI pooling by an offset
predicted from the plainly pooled features (Dai et al., 2017).

    bilinear_interpolate  sample (N, C, H, W) at fractional points, zero
                          outside (deform conv's rule): each point the
                          weighted sum of its four neighbours' pixel rows
                          (``_BilinearSample``, with a hand-written backward)
    deform_conv2d         torchvision.ops.deform_conv2d: sample every tap
                          at once, then one matrix product (im2col + matmul)
    DeformConv2d          torchvision's weight and bias plus the offset
                          (and, v2, mask) predictor ``conv_offset``
    deform_roi_pool       RoI Align (torchvision, aligned=False) with a
                          per-bin offset scaled by the RoI's size
    DeformRoIPool         fc head predicting the bin offsets, then pooling

The graded bodies lie between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
the argument checks before them stay in the exercise.
"""
import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import as_pair, check_image, check_kernel_fits, check_positive, check_tensor
from .roi import _as_rois, _check_input, _check_sampling_ratio, _check_spatial_scale


# ================================================================ bilinear sampling

class _BilinearSample(torch.autograd.Function):
    """``bilinear_interpolate``'s rule at points ``y, x`` ``(N, P)`` of ``input`` ``(N, C, H, W)``.

    Returns ``(N, P, C)``: a row of channels per point. The image, padded
    with a ring of zeros, becomes a table of pixel rows (channels last), and
    each point the weighted sum of its four neighbours' rows, all points at
    once by one ``F.embedding_bag`` (a bag of four rows per point, summed
    with per-row weights). The backward is written by hand: autograd's (of
    ``embedding_bag``, or of one gather per neighbour) adds the gradient rows
    back one at a time, or keeps every gathered row, and differentiates every
    step of the weights. Here, with ``v_j`` neighbour j's row and ``w_j`` its
    weight, for neighbours (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1):

        grad_input[v_j's pixel] += w_j * grad     (one scatter-add per neighbour)
        s_j = grad . v_j                           (one dot product per neighbour)
        grad_y = (1-lx) (s_2 - s_0) + lx (s_3 - s_1)
        grad_x = (1-ly) (s_1 - s_0) + ly (s_3 - s_2)
    """

    @staticmethod
    def forward(ctx, input, y, x):
        ### BEGIN SOLUTION
        (N, C, H, W), P = input.shape, y.shape[1]
        y0, x0 = y.floor(), x.floor()
        ly, lx = y - y0, x - x0
        # every neighbour of a point that reads anything, -1 <= y0 <= H-1 and
        # -1 <= x0 <= W-1, lies in the padded image; the others read 0
        reads = ((y0 >= -1) & (y0 <= H - 1) & (x0 >= -1) & (x0 <= W - 1)).to(y.dtype)
        wy, wx = torch.stack([1 - ly, ly], 1) * reads.unsqueeze(1), torch.stack([1 - lx, lx], 1)
        weight = (wy.unsqueeze(2) * wx.unsqueeze(1)).view(N, 4, P)  # wy[a] * wx[b]
        first = (y0.clamp(-1, H - 1).long() + 1) * (W + 2) + x0.clamp(-1, W - 1).long() + 1
        step = torch.tensor([0, 1, W + 2, W + 3], device=input.device)  # right, down, both
        pixel = first.unsqueeze(1) + step.view(1, 4, 1)  # (N, 4, P) in the padded image
        rows = pixel + torch.arange(N, device=input.device).view(N, 1, 1) * ((H + 2) * (W + 2))
        table = F.pad(input, (1, 1, 1, 1)).permute(0, 2, 3, 1).contiguous()
        table = table.view(N * (H + 2) * (W + 2), C)  # a row per pixel
        out = F.embedding_bag(rows.transpose(1, 2).reshape(-1, 4), table,
                              per_sample_weights=weight.transpose(1, 2).reshape(-1, 4), mode="sum")
        ctx.save_for_backward(table, pixel, rows, weight, ly, lx, reads)
        ctx.input_shape = input.shape
        return out.view(N, P, C)
        ### END SOLUTION

    @staticmethod
    def backward(ctx, grad):
        ### BEGIN SOLUTION
        table, pixel, rows, weight, ly, lx, reads = ctx.saved_tensors
        N, C, H, W = ctx.input_shape
        P = grad.shape[1]
        grad_input = grad_y = grad_x = None
        if ctx.needs_input_grad[0]:
            # channels first: along each image's pixels a scatter costs less than one of rows
            plane = grad.transpose(1, 2).contiguous()  # (N, C, P)
            padded = plane.new_zeros(N, C, (H + 2) * (W + 2))
            term = torch.empty_like(plane)
            for j in range(4):
                torch.mul(plane, weight[:, j:j + 1], out=term)
                padded.scatter_add_(2, pixel[:, j:j + 1].expand_as(plane), term)
            grad_input = padded.view(N, C, H + 2, W + 2)[:, :, 1:-1, 1:-1]
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad = grad.reshape(-1, C)
            read = torch.empty_like(grad)
            s = [torch.index_select(table, 0, rows[:, j].flatten(), out=read).mul_(grad).sum(1)
                 .view(N, P) for j in range(4)]  # s_j = grad . v_j
            grad_y = ((1 - lx) * (s[2] - s[0]) + lx * (s[3] - s[1])) * reads
            grad_x = ((1 - ly) * (s[1] - s[0]) + ly * (s[3] - s[2])) * reads
        return grad_input, grad_y, grad_x
        ### END SOLUTION


def bilinear_interpolate(input: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Sample every channel of ``input`` at fractional points, reading 0 outside the image.

    The rule of deformable convolution (torchvision's deform-conv kernel,
    from Dai et al., 2017): a point (y, x) reads

        v = (1-ly)(1-lx) f(y0, x0) + (1-ly) lx f(y0, x0+1)
            + ly (1-lx) f(y0+1, x0) + ly lx f(y0+1, x0+1)

    with ``y0 = floor(y)``, ``ly = y - y0`` (likewise x), where a neighbour
    outside ``[0, H-1] x [0, W-1]`` contributes 0. Hence an integer point
    reads its pixel exactly, a point with ``y <= -1``, ``y >= H``, ``x <= -1``
    or ``x >= W`` reads 0, and in the border band, e.g. ``-1 < y < 0``, the
    value fades linearly to 0: ``(1 + y) f(0, x)`` for integer x. (RoI Align
    instead clamps into the image; see ``deform_roi_pool``.)

    Vectorised: the image becomes a table of pixel rows (channels last), and
    every point, of the whole batch at once, the weighted sum of its four
    neighbours' rows (``_BilinearSample``). Differentiable w.r.t. ``input``,
    ``y`` and ``x``, by a backward written by hand: one scatter-add per
    neighbour into the image's gradient, and the closed-form derivatives
    w.r.t. y and x (at an integer y, where the derivative w.r.t. y jumps, it
    is the one of the cell ``[y, y+1]``, ``floor``'s convention, as in
    torchvision's backward kernel). The result is a view of the ``(N, *S,
    C)`` tensor of rows (any memory layout would be right; this one spares
    ``deform_conv2d`` a copy).

    Args:
        input: ``(N, C, H, W)``, floating point.
        y, x: row and column coordinates in pixels, both ``(N, *S)`` (the same
            shape; S any number of dims, possibly none), input's dtype; point
            ``[n, s]`` is read from image n.

    Returns:
        ``(N, C, *S)``, input's dtype: ``out[n, c, s] = v(input[n, c], y[n, s], x[n, s])``.
    """
    name = "bilinear_interpolate"
    check_tensor(input, name, dim=4)
    check_tensor(y, name, "y", dtype=input.dtype)
    check_tensor(x, name, "x", dtype=input.dtype)
    if y.shape != x.shape:
        raise ValueError(f"{name}: y and x must have the same shape, got {tuple(y.shape)} "
                         f"and {tuple(x.shape)}")
    if y.dim() < 1 or y.shape[0] != input.shape[0]:
        raise ValueError(f"{name}: y and x must have shape (N, *S) with N={input.shape[0]} "
                         f"as input, got {tuple(y.shape)}")
    ### BEGIN SOLUTION
    N, C, H, W = input.shape
    S = y.shape[1:]
    P = math.prod(S)
    out = _BilinearSample.apply(input, y.reshape(N, P), x.reshape(N, P))  # (N, P, C)
    return out.view(N, *S, C).movedim(-1, 1)  # channels last in memory
    ### END SOLUTION


# ================================================================ deformable convolution

def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias=None, stride=1,
                  padding=0, dilation=1, mask=None) -> Tensor:
    """Deformable convolution, v1 (Dai et al., 2017) or with ``mask`` v2 (Zhu et al., 2019).

    ``torchvision.ops.deform_conv2d``'s signature and semantics:

        out[n, o, i, j] = bias[o] + sum_{c, kh, kw} weight[o, c, kh, kw] * m[n, g, k, i, j]
                          * v(input[n, c0 + c], py + dy[n, g, k, i, j], px + dx[n, g, k, i, j])

    summed over the ``C_in/groups`` channels c of o's weight group, whose first
    input channel is c0, and the taps ``k = kh*KW + kw``, each read near its
    regular position ``py = i*sH - padH + kh*dH``, ``px = j*sW - padW + kw*dW``;
    g is the offset group of input channel ``c0 + c``, m the mask (1 without),
    and v the zero-outside bilinear rule of ``bilinear_interpolate`` (padding
    is not materialised: points outside the image read 0 either way). With
    zero offsets and no mask this is ``F.conv2d``.

    Vectorised: all taps of all positions of the batch are sampled by one
    ``bilinear_interpolate`` into an im2col matrix, channels last: a row per
    output pixel, a column per tap and input channel, ``(N*H_out*W_out,
    KH*KW*C_in)``, the order in which the sampler writes its memory; then one
    (batched over weight groups) matrix product with the weight reordered to
    match. The backward is autograd's, except for the sampler's own
    (``_BilinearSample``). With one weight group the result is channels last
    in memory, as the product leaves it. Unlike torchvision's kernel, any
    batch size works in one piece (no blocks of 32 images).

    Args:
        input: ``(N, C_in, H, W)``, floating point.
        offset: ``(N, 2*G*KH*KW, H_out, W_out)``, input's dtype; G, the number
            of offset groups, is read from the channel count. Channel
            ``g*2*KH*KW + 2*k`` is dy and ``g*2*KH*KW + 2*k + 1`` is dx of tap
            k (row-major) in group g: interleaved (dy, dx) per tap, in
            pixels, rows first. Offset group g serves the input channels
            ``[g*C_in/G, (g+1)*C_in/G)``; G must divide C_in.
        weight: ``(C_out, C_in/groups, KH, KW)``; ``groups = C_in // weight.shape[1]``
            (the weight groups, as a grouped conv) must divide C_out.
        bias: ``(C_out,)`` or None.
        stride, dilation: positive int or pair ``(H, W)``.
        padding: non-negative int or pair; virtual zeros around the image.
        mask: None (v1, every tap weighs 1) or ``(N, G*KH*KW, H_out, W_out)``,
            channel ``g*KH*KW + k``: multiplies the sample of tap k, used as
            given (no sigmoid here: ``DeformConv2d`` applies it).

    Returns:
        ``(N, C_out, H_out, W_out)``, input's dtype, with
        ``H_out = (H + 2*padH - dH*(KH-1) - 1) // sH + 1`` (likewise W).
    """
    name = "deform_conv2d"
    check_tensor(input, name, dim=4)
    check_tensor(offset, name, "offset", dtype=input.dtype, dim=4)
    check_tensor(weight, name, "weight", dtype=input.dtype, dim=4)
    N, C, H, W = input.shape
    C_out, C_per_group, KH, KW = weight.shape
    if C_per_group < 1 or KH < 1 or KW < 1 or C % C_per_group or C_out % (C // C_per_group):
        raise ValueError(f"{name}: weight {tuple(weight.shape)} does not fit input with C_in={C} "
                         f"channels: the weight groups C_in / weight.shape[1] must be a whole "
                         f"number dividing C_out={C_out}")
    groups = C // C_per_group
    if offset.shape[1] == 0 or offset.shape[1] % (2 * KH * KW):
        raise ValueError(f"{name}: offset has {offset.shape[1]} channels, expected a positive "
                         f"multiple of 2*KH*KW = {2 * KH * KW} (interleaved (dy, dx) per tap "
                         f"and offset group)")
    G = offset.shape[1] // (2 * KH * KW)
    if C % G:
        raise ValueError(f"{name}: {G} offset groups (offset has {offset.shape[1]} channels) "
                         f"do not divide C_in={C}")
    stride = as_pair(stride, "stride", 1, name)
    padding = as_pair(padding, "padding", 0, name)
    dilation = as_pair(dilation, "dilation", 1, name)
    check_kernel_fits(name, (KH, KW), dilation, (H + 2 * padding[0], W + 2 * padding[1]))
    H_out = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    W_out = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    if offset.shape[0] != N or offset.shape[2:] != (H_out, W_out):
        raise ValueError(f"{name}: offset must have shape (N, 2*G*KH*KW, H_out, W_out) = "
                         f"({N}, {offset.shape[1]}, {H_out}, {W_out}), got {tuple(offset.shape)}")
    if mask is not None:
        check_tensor(mask, name, "mask", dtype=input.dtype)
        if tuple(mask.shape) != (N, G * KH * KW, H_out, W_out):
            raise ValueError(f"{name}: mask must have shape (N, G*KH*KW, H_out, W_out) = "
                             f"({N}, {G * KH * KW}, {H_out}, {W_out}) for G={G} offset groups, "
                             f"got {tuple(mask.shape)}")
    if bias is not None:
        check_tensor(bias, name, "bias", dtype=input.dtype, shape=(C_out,))
    ### BEGIN SOLUTION
    (sH, sW), (pH, pW), (dH, dW) = stride, padding, dilation
    K, L = KH * KW, H_out * W_out
    arange = lambda n, step: step * torch.arange(  # noqa: E731
        n, dtype=input.dtype, device=input.device)
    ky, kx = torch.meshgrid(arange(KH, dH), arange(KW, dW), indexing="ij")
    # the regular grid, (H_out, W_out, K): output pixel (i, j), tap k
    base_y = (arange(H_out, sH) - pH).view(H_out, 1, 1) + ky.reshape(1, 1, K)
    base_x = (arange(W_out, sW) - pW).view(1, W_out, 1) + kx.reshape(1, 1, K)
    off = offset.reshape(N, G, K, 2, H_out, W_out).permute(0, 1, 4, 5, 2, 3)  # (N, G, Ho, Wo, K, 2)
    y = (base_y + off[..., 0]).reshape(N * G, H_out, W_out, K)
    x = (base_x + off[..., 1]).reshape(N * G, H_out, W_out, K)
    # every offset group samples its own block of channels at its own points
    cols = bilinear_interpolate(input.reshape(N * G, C // G, H, W), y, x)  # (N*G, C/G, Ho, Wo, K)
    cols = cols.movedim(1, -1).reshape(N, G, L, K, C // G)  # a view: the sampler's memory order
    if mask is not None:
        cols = cols * mask.reshape(N, G, K, L).transpose(2, 3).unsqueeze(-1)
    # im2col with a row per output pixel (n, i, j) and a column per (k, c), the order of the
    # sampler's memory; the weight's (c, kh, kw) reordered to match
    cols = cols.permute(0, 2, 3, 1, 4).reshape(N * L, K, groups, C_per_group)
    cols = cols.permute(2, 0, 1, 3).reshape(groups, N * L, K * C_per_group)
    w = weight.reshape(groups, C_out // groups, C_per_group, K).permute(0, 3, 2, 1)
    out = cols @ w.reshape(groups, K * C_per_group, C_out // groups)  # (groups, N*L, C_out/groups)
    out = out.view(groups, N, H_out, W_out, C_out // groups).permute(1, 0, 4, 2, 3)
    out = out.reshape(N, C_out, H_out, W_out)
    if bias is not None:
        out = out + bias.view(1, C_out, 1, 1)
    return out
    ### END SOLUTION


class DeformConv2d(nn.Module):
    """Deformable convolution layer with its own offset predictor (DCNv1, or DCNv2 if modulated).

    ``weight`` ``(out_channels, in_channels/groups, KH, KW)`` and ``bias``
    ``(out_channels,)`` (or None) are torchvision.ops.DeformConv2d's, with the
    same initialisation (that of nn.Conv2d: Kaiming-uniform with a=sqrt(5),
    bias uniform in +-1/sqrt(fan_in)). torchvision's module takes the offsets
    as a forward argument; this one predicts them, as in the papers (and
    mmcv's DeformConv2dPack / ModulatedDeformConv2dPack):

        conv_offset  nn.Conv2d(in_channels, M*G*KH*KW, kernel_size, stride,
                     padding, dilation), with bias, weight and bias
                     initialised to 0; M = 2 (v1) or 3 (modulated, v2).
                     Output channels ``[0, 2*G*KH*KW)`` are the offsets in
                     deform_conv2d's interleaved (dy, dx) layout; for v2 the
                     last ``G*KH*KW`` channels go through a sigmoid to give
                     the mask.

    Zero initialisation makes a fresh layer an ordinary convolution with its
    weight and bias (offsets 0) — for v2 scaled by 0.5 before the bias (mask
    sigmoid(0) = 0.5, the initial value DCNv2 prescribes). The offsets still
    receive gradients from the first step on, since the output depends on
    where it samples.

    ``state_dict`` keys, in order: ``weight``, ``bias`` (if bias),
    ``conv_offset.weight`` ``(M*G*KH*KW, in_channels, KH, KW)``,
    ``conv_offset.bias`` ``(M*G*KH*KW,)``. A torchvision DeformConv2d state
    dict loads with ``strict=False`` (only ``conv_offset.*`` missing).

    Args:
        in_channels, out_channels: positive ints, both divisible by ``groups``.
        kernel_size, stride, dilation: positive int or pair; padding:
            non-negative int or pair (as deform_conv2d).
        groups: weight groups (as nn.Conv2d).
        bias: whether the deformable conv has a bias.
        offset_groups: G, the number of channel blocks with their own
            offsets; must divide in_channels.
        modulated: False for DCNv1, True for DCNv2 (predicted mask).

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, H_out, W_out)`` as
    an nn.Conv2d with the same kernel_size, stride, padding and dilation.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, offset_groups: int = 1,
                 modulated: bool = False):
        super().__init__()
        name = "DeformConv2d"
        check_positive(name, in_channels=in_channels, out_channels=out_channels,
                        groups=groups, offset_groups=offset_groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        if in_channels % offset_groups:
            raise ValueError(f"{name}: offset_groups={offset_groups} must divide "
                             f"in_channels={in_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1, name)
        self.stride = as_pair(stride, "stride", 1, name)
        self.padding = as_pair(padding, "padding", 0, name)
        self.dilation = as_pair(dilation, "dilation", 1, name)
        self.groups, self.offset_groups, self.modulated = groups, offset_groups, bool(modulated)
        ### BEGIN SOLUTION
        KH, KW = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, KH, KW))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(in_channels // groups * KH * KW)
            nn.init.uniform_(self.bias, -bound, bound)
        per_tap = 3 if self.modulated else 2  # (dy, dx) [+ mask logit]
        self.conv_offset = nn.Conv2d(in_channels, per_tap * offset_groups * KH * KW,
                                     self.kernel_size, self.stride, self.padding, self.dilation)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, self.in_channels, "DeformConv2d")
        check_kernel_fits("DeformConv2d", self.kernel_size, self.dilation,
                          [n + 2 * p for n, p in zip(x.shape[2:], self.padding)])
        ### BEGIN SOLUTION
        predicted = self.conv_offset(x)
        n_offset = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        offset = predicted[:, :n_offset]
        mask = predicted[:, n_offset:].sigmoid() if self.modulated else None
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding,
                             self.dilation, mask)
        ### END SOLUTION

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, "
                f"offset_groups={self.offset_groups}, modulated={self.modulated}")


# ================================================================ deformable RoI pooling

def deform_roi_pool(input: Tensor, boxes, offset, output_size, spatial_scale: float = 1.0,
                    sampling_ratio: int = -1, gamma: float = 0.1) -> Tensor:
    """Deformable RoI pooling (Dai et al., 2017), on RoI Align's sampling.

    Each RoI is cut into ``PH x PW`` bins, and bin (i, j) averages a grid of
    bilinear samples, exactly as ``torchvision.ops.roi_align(aligned=False)``
    (He et al., 2017, Mask R-CNN), except that the whole bin is first moved
    by its offset:

        roi_w = max(x2*s - x1*s, 1),  roi_h = max(y2*s - y1*s, 1)   (s = spatial_scale)
        bin_h = roi_h / PH,  bin_w = roi_w / PW
        start_y(i, j) = y1*s + gamma * roi_h * offset[k, 0, i, j] + i * bin_h
        start_x(i, j) = x1*s + gamma * roi_w * offset[k, 1, i, j] + j * bin_w
        sample (iy, ix) at (start_y + (iy + 0.5) * bin_h / gh,
                            start_x + (ix + 0.5) * bin_w / gw)

    with ``gh = gw = sampling_ratio`` if > 0, else ``gh = ceil(roi_h / PH)``,
    ``gw = ceil(roi_w / PW)`` per RoI (adaptive), and the bin the mean of its
    ``gh * gw`` samples. The offsets are *normalised*: the paper's
    ``Δp = gamma * Δp̂ ∘ (roi_h, roi_w)`` (gamma = 0.1), in feature-map pixels,
    with the RoI's size after the clamp to >= 1. Samples use RoI Align's
    bilinear rule (0 outside ``[-1, H] x [-1, W]``, clamped into the image
    within it). Zero offsets (or ``offset=None``) give roi_align exactly.

    Vectorised over RoIs, bins, samples and channels: with adaptive sampling
    every RoI is sampled on the largest grid of the batch and the unused
    samples masked out, and ``bilinear_interpolate`` reads every RoI's points
    (clamped into the image, where its rule and RoI Align's agree) in every
    image of the batch, so memory grows with ``N*K*C*PH*PW*max(gh)*max(gw)``.
    Differentiable (autograd) w.r.t. input and offset.

    Args:
        input: ``(N, C, H, W)``, floating point.
        boxes: ``Tensor[K, 5]`` rows (batch index, x1, y1, x2, y2) in image
            coordinates, or a list of N' <= N ``Tensor[L_n, 4]`` (x1, y1, x2, y2)
            for images 0..N'-1 in order; input's dtype.
        offset: ``(K, 2, PH, PW)``, input's dtype, channel 0 = dy (rows) and
            channel 1 = dx (columns), the order of deform_conv2d (mmcv and the
            original DCN code store (dx, dy)); or None for zero offsets.
        output_size: positive int or pair ``(PH, PW)``.
        spatial_scale: positive number mapping box to feature-map coordinates.
        sampling_ratio: samples per bin side; <= 0 for adaptive.
        gamma: the offset scale.

    Returns:
        ``(K, C, PH, PW)``, input's dtype (``(0, C, PH, PW)`` for no boxes).
    """
    name = "deform_roi_pool"
    _check_input(input, name)
    rois = _as_rois(boxes, input, name)
    PH, PW = as_pair(output_size, "output_size", 1, name)
    spatial_scale = _check_spatial_scale(spatial_scale, name)
    _check_sampling_ratio(sampling_ratio, name)
    if not isinstance(gamma, numbers.Real):
        raise ValueError(f"{name}: gamma must be a number, got {gamma!r}")
    K = rois.shape[0]
    if offset is not None:
        check_tensor(offset, name, "offset", dtype=input.dtype)
        if tuple(offset.shape) != (K, 2, PH, PW):
            raise ValueError(f"{name}: offset must have shape (K, 2, PH, PW) = "
                             f"({K}, 2, {PH}, {PW}), got {tuple(offset.shape)}")
    ### BEGIN SOLUTION
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale).unbind(1)  # each (K,)
    roi_h, roi_w = (y2 - y1).clamp(min=1), (x2 - x1).clamp(min=1)  # as aligned=False
    bin_h, bin_w = roi_h / PH, roi_w / PW
    if sampling_ratio > 0:
        gh = gw = torch.full_like(roi_h, sampling_ratio)
    else:
        gh, gw = bin_h.ceil(), bin_w.ceil()
    Gh, Gw = (int(gh.max()), int(gw.max())) if K else (1, 1)  # the largest grid
    if offset is None:
        offset = input.new_zeros(K, 2, PH, PW)
    # dims (K, PH, PW, Gh, Gw): RoI, bin row, bin column, sample row, sample column
    ar = lambda n: torch.arange(n, dtype=input.dtype, device=input.device)  # noqa: E731
    i, j = ar(PH).view(1, PH, 1, 1, 1), ar(PW).view(1, 1, PW, 1, 1)
    iy, ix = ar(Gh).view(1, 1, 1, Gh, 1), ar(Gw).view(1, 1, 1, 1, Gw)
    v = lambda t: t.view(K, 1, 1, 1, 1)  # noqa: E731  one value per RoI
    dy, dx = offset[:, 0, :, :, None, None], offset[:, 1, :, :, None, None]
    start_y = v(y1) + v(gamma * roi_h) * dy + v(bin_h) * i  # (K, PH, PW, 1, 1)
    start_x = v(x1) + v(gamma * roi_w) * dx + v(bin_w) * j
    y = start_y + (iy + 0.5) * v(bin_h) / v(gh)  # (K, PH, PW, Gh, 1)
    x = start_x + (ix + 0.5) * v(bin_w) / v(gw)  # (K, PH, PW, 1, Gw)
    y, x = torch.broadcast_tensors(y, x)  # (K, PH, PW, Gh, Gw)
    N, H, W = input.shape[0], input.shape[2], input.shape[3]
    # RoI Align's rule: 0 outside [-1, H] x [-1, W], clamped into the image within it
    inside = (y >= -1) & (y <= H) & (x >= -1) & (x <= W)
    y, x = y.clamp(0, H - 1).expand(N, *y.shape), x.clamp(0, W - 1).expand(N, *x.shape)
    # every image reads every RoI's points; RoI k keeps those of its image rois[k, 0]
    samples = bilinear_interpolate(input, y, x)  # (N, C, K, PH, PW, Gh, Gw)
    k = torch.arange(K, device=input.device)
    samples = samples[rois[:, 0].long(), :, k]  # (K, C, PH, PW, Gh, Gw)
    used = inside & (iy < v(gh)) & (ix < v(gw))  # and each RoI its own gh x gw grid
    return (samples * used.unsqueeze(1)).sum((-2, -1)) / (gh * gw).view(K, 1, 1, 1)
    ### END SOLUTION


class DeformRoIPool(nn.Module):
    """Deformable RoI pooling with its offset head (Dai et al., 2017; mmcv's DeformRoIPoolPack).

    First a plain pooling (zero offsets, i.e. RoI Align with aligned=False)
    gives ``(K, C, PH, PW)`` features; ``offset_fc`` maps them, flattened, to
    the normalised offsets ``(K, 2, PH, PW)`` (channel 0 dy, 1 dx); then the
    RoIs are pooled again with those offsets:

        offset_fc  Linear(C*PH*PW, hidden) - ReLU - Linear(hidden, hidden) - ReLU
                   - Linear(hidden, 2*PH*PW), the last one zero-initialised
                   (weight and bias), so training starts from plain RoI Align.

    ``state_dict``: ``offset_fc.{0,2,4}.{weight,bias}``.

    Args:
        output_size: positive int or pair (PH, PW).
        channels: C, the input's channels.
        spatial_scale, sampling_ratio, gamma: as deform_roi_pool.
        hidden_channels: width of the two hidden fc layers (mmcv: 1024).

    Shapes: input ``(N, C, H, W)`` and boxes ``Tensor[K, 5]`` or a list of
    ``Tensor[L, 4]`` -> ``(K, C, PH, PW)``.
    """

    def __init__(self, output_size, channels: int, spatial_scale: float = 1.0,
                 sampling_ratio: int = -1, gamma: float = 0.1, hidden_channels: int = 1024):
        super().__init__()
        check_positive("DeformRoIPool", channels=channels, hidden_channels=hidden_channels)
        self.output_size = as_pair(output_size, "output_size", 1, "DeformRoIPool")
        _check_spatial_scale(spatial_scale, "DeformRoIPool")
        _check_sampling_ratio(sampling_ratio, "DeformRoIPool")
        self.channels, self.spatial_scale = channels, spatial_scale
        self.sampling_ratio, self.gamma = sampling_ratio, gamma
        PH, PW = self.output_size
        self.offset_fc = nn.Sequential(
            nn.Linear(channels * PH * PW, hidden_channels), nn.ReLU(),
            nn.Linear(hidden_channels, hidden_channels), nn.ReLU(),
            nn.Linear(hidden_channels, 2 * PH * PW),
        )
        nn.init.zeros_(self.offset_fc[-1].weight)
        nn.init.zeros_(self.offset_fc[-1].bias)

    def forward(self, input: Tensor, boxes) -> Tensor:
        check_image(input, self.channels, "DeformRoIPool")
        args = (self.output_size, self.spatial_scale, self.sampling_ratio, self.gamma)
        pooled = deform_roi_pool(input, boxes, None, *args)
        offset = self.offset_fc(pooled.flatten(1)).view(len(pooled), 2, *self.output_size)
        return deform_roi_pool(input, boxes, offset, *args)
