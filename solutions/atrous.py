"""Dilated (atrous) convolution and the segmentation heads built on it.

A convolution with dilation d reads its kernel taps d pixels apart: a 3x3
kernel with d = 2 sees a 5x5 window with the same 9 weights. Stacking layers
with doubling rates grows the receptive field exponentially with depth, at full
resolution and with no pooling
(Yu & Koltun, 2016, "Multi-Scale Context Aggregation by Dilated Convolutions";
the "algorithme a trous" of Holschneider et al., 1989, used in DeepLab, Chen
et al., 2015-2018).

    conv2d                    F.conv2d (stride, padding, dilation, groups) from
                              F.unfold + one batched matrix multiply
    receptive_field           size of one output unit's window in input pixels
    coverage                  how many paths join each input pixel to one output
                              unit: the "gridding" holes of equal rates (Wang et
                              al., 2018) and the hybrid rates that close them
    DepthwiseSeparableConv2d  depthwise k x k conv + pointwise 1x1 conv (Sifre,
                              2014; Chollet, 2017, Xception; Howard et al., 2017)
    ASPP                      atrous spatial pyramid pooling, torchvision's
                              DeepLabV3 layout (Chen et al., 2017, "Rethinking
                              Atrous Convolution for Semantic Image Segmentation")
    DUC                       dense upsampling convolution (Wang et al., 2018,
                              "Understanding Convolution for Semantic Segmentation")

The graded bodies lie between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
the argument checks before them stay in the exercise.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import as_pair, check_image, check_kernel_fits, check_positive, check_tensor, is_int


def conv2d(input: Tensor, weight: Tensor, bias=None, stride=1, padding=0, dilation=1,
           groups: int = 1) -> Tensor:
    """2-D cross-correlation, as ``F.conv2d``, built from ``F.unfold`` and a matmul.

    ``out[n, o, i, j] = bias[o] + sum_{c, p, q} weight[o, c, p, q]
    * x[n, g*C/groups + c, i*sH + p*dH - padH, j*sW + q*dW - padW]`` with
    ``g = o // (C_out/groups)`` the group of output channel o and x zero outside
    the image. ``F.unfold`` gathers every window into a column, so the whole
    convolution is one (batched over groups) matrix product: no loop over
    pixels, batch or kernel taps.

    Args:
        input: ``(N, C_in, H, W)``, floating point. (F.conv2d also takes an
            unbatched ``(C_in, H, W)``; here use ``input.unsqueeze(0)``.)
        weight: ``(C_out, C_in / groups, KH, KW)``, same dtype as input.
        bias: ``(C_out,)`` or None.
        stride, dilation: positive int or pair ``(H, W)``. Dilation d spaces the
            kernel taps d pixels apart: the window spans ``d*(K-1) + 1`` pixels.
        padding: non-negative int or pair, zeros on both sides; or ``"valid"``
            (no padding) or ``"same"`` (output as large as the input, stride 1
            only): a total of ``d*(K-1)`` zeros per dim, ``total // 2`` before
            and the rest after, as F.conv2d.
        groups: splits the input and output channels into ``groups``
            independent convolutions; must divide C_in and C_out.
            ``groups == C_in`` is a depthwise convolution.

    Returns:
        ``(N, C_out, H_out, W_out)``, input's dtype, with
        ``H_out = (H + 2*padH - dH*(KH-1) - 1) // sH + 1`` (likewise W).
    """
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError("conv2d: input and weight must be torch.Tensors")
    check_tensor(input, "conv2d", dim=4, layout="(N, C_in, H, W)")
    check_tensor(weight, "conv2d", "weight", dtype=input.dtype, dim=4,
                 layout="(C_out, C_in/groups, KH, KW)")
    N, C, H, W = input.shape
    C_out, C_per_group, KH, KW = weight.shape
    if not is_int(groups) or groups < 1 or C % groups or C_out % groups:
        raise ValueError(f"conv2d: groups={groups!r} must be a positive int dividing both "
                         f"C_in={C} and C_out={C_out}")
    if C_per_group * groups != C:
        raise ValueError(f"conv2d: weight {tuple(weight.shape)} expects {C_per_group * groups} "
                         f"input channels (C_in/groups={C_per_group}, groups={groups}), "
                         f"input has {C}")
    if bias is not None:
        check_tensor(bias, "conv2d", "bias", dtype=input.dtype, shape=(C_out,))
    stride = as_pair(stride, "stride", 1, "conv2d")
    dilation = as_pair(dilation, "dilation", 1, "conv2d")
    span = (dilation[0] * (KH - 1) + 1, dilation[1] * (KW - 1) + 1)
    if padding == "valid":
        pads = (0, 0, 0, 0)
    elif padding == "same":
        if stride != (1, 1):
            raise ValueError(f"conv2d: padding='same' is not supported for strided "
                             f"convolutions (stride={stride})")
        (th, tw) = (span[0] - 1, span[1] - 1)
        pads = (tw // 2, tw - tw // 2, th // 2, th - th // 2)  # F.pad order: W then H
    elif isinstance(padding, str):
        raise ValueError(f"conv2d: padding string must be 'valid' or 'same', got {padding!r}")
    else:
        ph, pw = as_pair(padding, "padding", 0, "conv2d")
        pads = (pw, pw, ph, ph)
    check_kernel_fits("conv2d", (KH, KW), dilation,
                      (H + pads[2] + pads[3], W + pads[0] + pads[1]))
    ### BEGIN SOLUTION
    x = F.pad(input, pads)
    H_out = (x.shape[2] - span[0]) // stride[0] + 1
    W_out = (x.shape[3] - span[1]) // stride[1] + 1
    # (N, C*KH*KW, L): column l holds the window of output pixel l, channel-major
    # (c, p, q), the order of weight.view(C_out, -1).
    cols = F.unfold(x, (KH, KW), dilation=dilation, stride=stride)
    cols = cols.view(N, groups, C_per_group * KH * KW, H_out * W_out)
    w = weight.reshape(groups, C_out // groups, C_per_group * KH * KW)
    out = (w @ cols).view(N, C_out, H_out, W_out)  # (N, groups, C_out/groups, L)
    if bias is not None:
        out = out + bias.view(1, C_out, 1, 1)
    return out
    ### END SOLUTION


def _check_layer(layer) -> tuple:
    if not (isinstance(layer, (tuple, list)) and len(layer) == 3
            and all(is_int(v) and v >= 1 for v in layer)):
        raise ValueError(f"receptive_field: each layer must be a (kernel, stride, dilation) "
                         f"tuple of positive ints, got {layer!r}")
    return tuple(layer)


def receptive_field(layers) -> int:
    """Receptive field, in input pixels along one axis, of one unit after ``layers``.

    Layer i (kernel k_i, stride s_i, dilation d_i) widens the window by
    ``(k_i - 1) * d_i`` of its own input pixels, each of which lies
    ``jump_i = s_1 * ... * s_{i-1}`` input pixels from the next:

        r = 1 + sum_i (k_i - 1) * d_i * prod_{j<i} s_j

    A pooling layer counts as a layer with its kernel and stride (dilation 1).
    Padding shifts the window but does not change its size. The jump (effective
    stride) of the output, ``prod_i s_i``, is not returned.

    Args:
        layers: sequence of ``(kernel, stride, dilation)`` positive ints, input
            side first. An empty sequence gives 1.

    Returns:
        int, e.g. 7 for three 3x3 stride-1 convs, 15 for dilations 1, 2, 4.
    """
    layers = [_check_layer(layer) for layer in layers]
    ### BEGIN SOLUTION
    r, jump = 1, 1
    for k, s, d in layers:
        r += (k - 1) * d * jump
        jump *= s
    return r
    ### END SOLUTION


def coverage(dilations, kernel: int = 3) -> Tensor:
    """Number of paths from each input pixel to one output unit of a dilated stack.

    The stack is ``len(dilations)`` stride-1 convolutions with ``kernel x
    kernel`` kernels, layer i dilated by ``dilations[i]``. Each layer's taps
    are offsets ``{0, d, ..., (kernel-1)*d}`` on both axes, so an input pixel
    at offset (u, v) from the window's corner reaches the output unit along as
    many paths as there are ways to write u (and v) as one tap offset per
    layer. A pixel with 0 paths is a *hole*: equal rates such as (2, 2, 2) see
    only a sparse grid ("gridding"), hybrid rates such as (1, 2, 5) with no
    common factor see the whole square (Wang et al., 2018). The square kernel
    is separable, so the 2-D count is the outer product of the 1-D counts.

    Args:
        dilations: sequence of positive ints, one rate per layer.
        kernel: positive int, the kernel size of every layer.

    Returns:
        ``(R, R)`` int64, ``R = receptive_field([(kernel, 1, d) for d in
        dilations])``; the counts add up to ``kernel ** (2 * len(dilations))``.
    """
    check_positive("coverage", kernel=kernel)
    dilations = list(dilations)
    if not all(is_int(d) and d >= 1 for d in dilations):
        raise ValueError(f"coverage: dilations must be positive ints, got {dilations!r}")
    ### BEGIN SOLUTION
    counts = torch.ones(1, dtype=torch.int64)  # 1-D paths, starting from the output unit
    taps = torch.arange(kernel)
    for d in dilations:
        # every tap t shifts the current counts by t * d; add all shifted copies
        index = (torch.arange(len(counts)) + d * taps[:, None]).flatten()
        grown = torch.zeros(len(counts) + (kernel - 1) * d, dtype=torch.int64)
        counts = grown.index_add_(0, index, counts.repeat(kernel))
    return counts[:, None] * counts[None, :]
    ### END SOLUTION


class DepthwiseSeparableConv2d(nn.Module):
    """A k x k convolution factored into a depthwise and a pointwise convolution.

    ``depthwise``: ``nn.Conv2d(in_channels, in_channels, kernel_size, stride,
    padding, dilation, groups=in_channels)``, one k x k filter per input
    channel (spatial mixing only); ``pointwise``: ``nn.Conv2d(in_channels,
    out_channels, 1)`` (channel mixing only). Nothing between them, as
    Xception's separable conv (Chollet, 2017); MobileNet (Howard et al., 2017)
    puts BN + ReLU after each. With a dilation this is DeepLabv3+'s "atrous
    separable convolution" (Chen et al., 2018).

    Bias: none by default (``bias=False`` on both convs, as when a BN follows),
    so the weights number ``k*k*C_in + C_in*C_out`` against ``k*k*C_in*C_out``
    for the full conv: 27 + 12 = 39 against 108 for 3 -> 4 channels, 3x3. With
    ``bias=True`` both convs get one: ``+ C_in + C_out``.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, H', W')``, H', W' those of an
    nn.Conv2d with the same kernel_size, stride, padding and dilation.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = False):
        super().__init__()
        check_positive("DepthwiseSeparableConv2d", in_channels=in_channels,
                       out_channels=out_channels)
        self.in_channels = in_channels
        ### BEGIN SOLUTION
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride,
                                   padding=padding, dilation=dilation, groups=in_channels,
                                   bias=bias)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, self.in_channels, "DepthwiseSeparableConv2d")
        ### BEGIN SOLUTION
        return self.pointwise(self.depthwise(x))
        ### END SOLUTION


class ASPPConv(nn.Sequential):
    """ASPP's atrous branch: 3x3 conv (dilation = padding = rate, no bias), BN, ReLU.

    ``(N, C_in, H, W) -> (N, C_out, H, W)``; indices 0, 1, 2 as torchvision's.
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation,
                      bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class ASPPPooling(nn.Sequential):
    """ASPP's image-level branch: global average pool, 1x1 conv (no bias), BN, ReLU,
    then bilinear upsampling (``align_corners=False``) back to the input's H x W,
    which copies the one value to every pixel.

    ``(N, C_in, H, W) -> (N, C_out, H, W)``. The BN sees one value per channel
    and sample, so in training mode the batch needs N > 1.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling of DeepLabv3 (Chen et al., 2017), torchvision's layout.

    Parallel branches on the same input, concatenated on channels, projected:

        convs.0   1x1 conv, BN, ReLU
        convs.i   ASPPConv(rate_i): 3x3 conv with dilation rate_i, BN, ReLU
        convs.-1  ASPPPooling: image-level features, upsampled back to H x W
        project   1x1 conv ((len(rates) + 2) * C_out -> C_out), BN, ReLU, Dropout(0.5)

    Convolutions have no bias (a BN follows each). The names and order match
    torchvision's ``ASPP``, so state dicts interchange (``convs.0.0.weight``,
    ``convs.1.0.weight``, ..., ``convs.4.1.weight`` for the pooling branch's
    conv with three rates, ``project.0.weight``, ...). ``ASPP(2048, [12, 24,
    36])``, torchvision's DeepLabV3 head on a ResNet-50/101 at output stride 8,
    has 15,535,104 parameters.

    Training mode needs a batch of N > 1 (the pooling branch's BN sees one value
    per channel and sample); eval mode is deterministic (dropout off).

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, atrous_rates, out_channels: int = 256):
        super().__init__()
        check_positive("ASPP", in_channels=in_channels, out_channels=out_channels)
        rates = tuple(atrous_rates)
        if not all(is_int(r) and r >= 1 for r in rates):
            raise ValueError(f"ASPP: atrous_rates must be positive ints, got {atrous_rates!r}")
        self.in_channels = in_channels
        ### BEGIN SOLUTION
        modules = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                 nn.BatchNorm2d(out_channels), nn.ReLU())]
        modules += [ASPPConv(in_channels, out_channels, rate) for rate in rates]
        modules.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(modules)
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        )
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, self.in_channels, "ASPP")
        if self.training and x.shape[0] < 2:
            raise ValueError(f"ASPP: training mode needs a batch of more than 1 sample (the "
                             f"pooling branch's BatchNorm sees one value per channel), got "
                             f"N={x.shape[0]}; call .eval() for a single image")
        ### BEGIN SOLUTION
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))
        ### END SOLUTION


class DUC(nn.Module):
    """Dense Upsampling Convolution (Wang et al., 2018).

    Instead of interpolating a low-resolution score map, predict every pixel of
    each r x r output block: ``conv``, a 3x3 convolution (padding 1, with bias)
    to ``r*r * num_classes`` channels, then ``pixel_shuffle``,
    ``nn.PixelShuffle(r)``, which moves channel ``c*r*r + i*r + j`` of pixel
    (h, w) to channel c of pixel ``(h*r + i, w*r + j)``. The output is class
    scores (logits), as in the paper, where they go straight to the softmax.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes, H*r, W*r)``.
    """

    def __init__(self, in_channels: int, num_classes: int, upscale: int):
        super().__init__()
        check_positive("DUC", in_channels=in_channels, num_classes=num_classes,
                       upscale=upscale)
        self.in_channels = in_channels
        ### BEGIN SOLUTION
        self.conv = nn.Conv2d(in_channels, upscale * upscale * num_classes, 3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(upscale)
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, self.in_channels, "DUC")
        ### BEGIN SOLUTION
        return self.pixel_shuffle(self.conv(x))
        ### END SOLUTION
