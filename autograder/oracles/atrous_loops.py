"""Slow, independent references for solutions/atrous.py: oracles, not course code.

- ``naive_conv2d``: the convolution sum written out with Python loops over every
  output value and kernel tap, on Python floats (no unfold, no matmul, no conv).
- ``brute_receptive_field`` / ``brute_coverage``: measured, not computed: the
  gradient of one output unit w.r.t. the input of a real stack of ``nn.Conv2d``
  with all-ones weights is, at each input pixel, the number of paths from that
  pixel to the unit; its nonzero extent is the receptive field.
  ``brute_receptive_field_1d``: the same measurement along one axis.
- ``enumerate_coverage``: the same path counts by enumerating every choice of
  one tap per layer (itertools), with no tensor arithmetic at all.
- ``TorchvisionASPP``: torchvision's ASPP (torchvision/models/segmentation/
  deeplabv3.py) transcribed, since torchvision is not installed here.
"""
import itertools
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn


def _same_pads(k, d):
    total = d * (k - 1)
    return total // 2, total - total // 2


def naive_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv2d by the definition, in float64 Python arithmetic. Small inputs only."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    if padding == "valid":
        (pt, pb), (pl, pr) = (0, 0), (0, 0)
    elif padding == "same":
        (pt, pb), (pl, pr) = _same_pads(KH, dh), _same_pads(KW, dw)
    else:
        ph, pw = pair(padding)
        (pt, pb), (pl, pr) = (ph, ph), (pw, pw)
    Ho = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    Wo = (W + pl + pr - dw * (KW - 1) - 1) // sw + 1
    xs, ws = x.tolist(), w.tolist()
    bs = None if b is None else b.tolist()
    opg = O // groups
    out = [[[[0.0] * Wo for _ in range(Ho)] for _ in range(O)] for _ in range(N)]
    for n in range(N):
        for o in range(O):
            g = o // opg
            for i in range(Ho):
                for j in range(Wo):
                    acc = 0.0 if bs is None else float(bs[o])
                    for c in range(Cg):
                        for p in range(KH):
                            for q in range(KW):
                                r = i * sh + p * dh - pt
                                s = j * sw + q * dw - pl
                                if 0 <= r < H and 0 <= s < W:
                                    acc += ws[o][c][p][q] * xs[n][g * Cg + c][r][s]
                    out[n][o][i][j] = acc
    return torch.tensor(out, dtype=torch.float64).reshape(N, O, Ho, Wo)


def _ones_stack(layers):
    convs = []
    for k, s, d in layers:
        conv = nn.Conv2d(1, 1, k, stride=s, dilation=d, bias=False).double()
        nn.init.ones_(conv.weight)
        convs.append(conv)
    return nn.Sequential(*convs)


def _path_counts(layers, size):
    """Gradient of output unit (0, 0) w.r.t. a size x size input through ones-convs."""
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    y = _ones_stack(layers)(x)
    (grad,) = torch.autograd.grad(y[0, 0, 0, 0], x)
    return grad[0, 0]


def brute_receptive_field(layers):
    """(extent along rows, extent along cols, first row, first col) of nonzero grads."""
    size = 1
    for k, s, d in reversed(layers):  # smallest input giving at least one output
        size = (size - 1) * s + d * (k - 1) + 1
    grad = _path_counts(layers, size + 3)  # a margin: the unit must not see past it
    rows = grad.abs().sum(1).nonzero().flatten()
    cols = grad.abs().sum(0).nonzero().flatten()
    return (int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1,
            int(rows[0]), int(cols[0]))


def brute_coverage(dilations, kernel):
    """Path counts from each input pixel of the receptive field to the one output unit."""
    layers = [(kernel, 1, d) for d in dilations]
    size = 1 + sum((kernel - 1) * d for d in dilations)
    grad = _path_counts(layers, size)
    assert grad.shape == (size, size)
    return grad.round().to(torch.int64)


def enumerate_coverage(dilations, kernel):
    """Counter {(row, col): paths} by trying every tap of every layer."""
    offsets = [[(p * d, q * d) for p in range(kernel) for q in range(kernel)] for d in dilations]
    counts = Counter()
    for choice in itertools.product(*offsets):
        counts[(sum(r for r, _ in choice), sum(c for _, c in choice))] += 1
    return counts


# ---------------------------------------------------------------- torchvision's ASPP

class TorchvisionASPPConv(nn.Sequential):
    def __init__(self, in_channels, out_channels, dilation):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class TorchvisionASPPPooling(nn.Sequential):
    def __init__(self, in_channels, out_channels):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x):
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class TorchvisionASPP(nn.Module):
    def __init__(self, in_channels, atrous_rates, out_channels=256):
        super().__init__()
        modules = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                 nn.BatchNorm2d(out_channels), nn.ReLU())]
        for rate in tuple(atrous_rates):
            modules.append(TorchvisionASPPConv(in_channels, out_channels, rate))
        modules.append(TorchvisionASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(modules)
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        )

    def forward(self, x):
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


def brute_receptive_field_1d(layers):
    """The receptive field's extent, measured as ``brute_receptive_field`` does along one axis
    (all-ones ``F.conv1d`` layers), so deep strided stacks stay cheap."""
    size = 1
    for k, s, d in reversed(layers):
        size = (size - 1) * s + d * (k - 1) + 1
    x = torch.zeros(1, 1, size + 3, dtype=torch.float64, requires_grad=True)
    y = x
    for k, s, d in layers:
        y = F.conv1d(y, torch.ones(1, 1, k, dtype=torch.float64), stride=s, dilation=d)
    (grad,) = torch.autograd.grad(y[0, 0, 0], x)
    reached = grad[0, 0].nonzero().flatten()
    return int(reached[-1] - reached[0]) + 1
