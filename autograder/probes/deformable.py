"""Probes of the deformable convolution exercise."""
from pathlib import Path

import numpy as np

from ..verify import Probe
from . import MODULE_HELPERS, STAND_IN, float32

# deform_conv2d is verified with the oracles' sampler and DeformConv2d with their
# deform_conv2d, as the notebook's tests do. The oracles sample with F.grid_sample, which
# verification refuses the answers (the worker's guard): here they sample by gathering the
# four neighbours instead, the same values and gradients at every non-integer point.
GATHER_BILINEAR = """

def grid_bilinear(input, y, x):
    N, C, H, W = input.shape
    pixels, out = input.reshape(N, C, H * W), 0
    for row in (y.floor(), y.floor() + 1):
        for col in (x.floor(), x.floor() + 1):
            weight = (1 - (y - row).abs()) * (1 - (x - col).abs())
            inside = (row >= 0) & (row <= H - 1) & (col >= 0) & (col <= W - 1)
            index = (row.clamp(0, H - 1) * W + col.clamp(0, W - 1)).long().reshape(N, 1, -1)
            value = pixels.gather(2, index.expand(N, C, -1)).reshape(N, C, *y.shape[1:])
            out = out + value * (weight * inside).unsqueeze(1)
    return out
"""
_ORACLES = (STAND_IN + (Path(__file__).parent.parent / "oracles" / "deformable.py").read_text()
            + GATHER_BILINEAR)


def _int(rng, low, high):
    return int(rng.integers(low, high + 1))


def _pair(rng, low, high):
    """An int or a list of two (as_pair takes both)."""
    return _int(rng, low, high) if rng.random() < 0.5 else [_int(rng, low, high) for _ in range(2)]


def _two(value):
    return value if isinstance(value, list) else [value, value]


def _bilinear(rng, points_dims, dtype=np.float64):
    """Points of shape (N, *S), S of ``points_dims`` dimensions."""
    N, C, H, W = _int(rng, 1, 3), _int(rng, 1, 3), _int(rng, 2, 6), _int(rng, 2, 6)
    S = [_int(rng, 1, 4) for _ in range(points_dims)]
    # fractional points, many in the border band or beyond
    y, x = rng.uniform(-2, H + 1, (N, *S)), rng.uniform(-2, W + 1, (N, *S))
    image = rng.normal(size=(N, C, H, W))
    return {k: v.astype(dtype) for k, v in
            dict(image=image, y=y, x=x, g=rng.normal(size=(N, C, *S))).items()}


def _conv_config(rng):
    groups, G = _int(rng, 1, 2), _int(rng, 1, 2)
    kernel = [_int(rng, 1, 3), _int(rng, 1, 3)]
    stride, padding, dilation = _pair(rng, 1, 2), _pair(rng, 0, 2), _pair(rng, 1, 2)
    # H, W of 2..7 pixels, or more where the dilated kernel needs it
    size = [max(_int(rng, 2, 7), d * (k - 1) + 1 - 2 * p)
            for k, p, d in zip(kernel, _two(padding), _two(dilation))]
    out = [(n + 2 * p - d * (k - 1) - 1) // s + 1
           for n, k, s, p, d in zip(size, kernel, _two(stride), _two(padding), _two(dilation))]
    return dict(N=_int(rng, 1, 3), C=groups * G * _int(rng, 1, 2), C_out=groups * _int(rng, 1, 3),
                groups=groups, G=G, kernel=kernel, stride=stride, padding=padding,
                dilation=dilation, size=size, out=out)


def _deform_conv(rng, with_mask, dtype=np.float64):
    c = _conv_config(rng)
    (KH, KW), (H_out, W_out), N, G = c["kernel"], c["out"], c["N"], c["G"]
    arrays = dict(x=rng.normal(size=(c["N"], c["C"], *c["size"])),
                  offset=rng.normal(0, 1.5, (N, 2 * G * KH * KW, H_out, W_out)),
                  weight=rng.normal(size=(c["C_out"], c["C"] // c["groups"], KH, KW)),
                  bias=rng.normal(size=c["C_out"]) if rng.random() < 0.5 else None,
                  mask=rng.uniform(0, 1, (N, G * KH * KW, H_out, W_out)) if with_mask else None,
                  g=rng.normal(size=(N, c["C_out"], H_out, W_out)))
    arrays = {k: v if v is None else v.astype(dtype) for k, v in arrays.items()}
    return dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], **arrays)


def _layer(rng, modulated):
    c = _conv_config(rng)
    kwargs = dict(kernel_size=c["kernel"], stride=c["stride"], padding=c["padding"],
                  dilation=c["dilation"], groups=c["groups"], bias=rng.random() < 0.5,
                  offset_groups=c["G"], modulated=modulated)
    return dict(x=rng.normal(size=(c["N"], c["C"], *c["size"])), C=c["C"], C_out=c["C_out"],
                kwargs=kwargs, seed=_int(rng, 0, 2**31 - 1))


def _rois(rng, N, H, W, scale):
    """(batch index, x1, y1, x2, y2) rows, by image; on the feature map, boxes may
    stick out of it and some are narrower than a pixel, where the size is clamped to 1."""
    K = _int(rng, 2, 5)
    x1, y1 = rng.uniform(-2, W - 2, K), rng.uniform(-2, H - 2, K)
    x2, y2 = x1 + rng.uniform(0.1, 7, K), y1 + rng.uniform(0.1, 7, K)
    return np.stack([np.sort(rng.integers(0, N, K)).astype(float),
                     *(np.stack([x1, y1, x2, y2]) / scale)], 1)


def _roi_pool(rng):
    N, C, H, W = _int(rng, 1, 3), _int(rng, 1, 3), _int(rng, 4, 9), _int(rng, 4, 9)
    scale = float(rng.uniform(0.5, 1.5))
    rois = _rois(rng, N, H, W, scale)
    size = _pair(rng, 1, 3)
    PH, PW = _two(size)
    return dict(x=rng.normal(size=(N, C, H, W)), rois=rois, size=size,
                offset=rng.normal(size=(len(rois), 2, PH, PW)),
                scale=scale, ratio=int(rng.choice([-1, 0, 1, 2, 3])),
                gamma=float(rng.uniform(0.05, 0.3)), g=rng.normal(size=(len(rois), C, PH, PW)))


DEFORM_CONV = _ORACLES + """
inputs = [t.requires_grad_() for t in (x, offset, weight, bias, mask) if t is not None]
with stand_in(deform_conv2d, bilinear_interpolate=grid_bilinear):
    out = deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)
result = [out] + list(torch.autograd.grad(out, inputs, g))
"""

LAYER = MODULE_HELPERS + _ORACLES + """
m = fill(DeformConv2d(C, C_out, **kwargs).to(x.dtype), seed)
params = [p for _, p in sorted(m.named_parameters())]
with stand_in(DeformConv2d, deform_conv2d=tap_loop_deform_conv2d):
    out = m(x.requires_grad_())
result = [out] + list(torch.autograd.grad(out.square().sum(), [x] + params))
"""

PROBES = {
    # points of every rank the tests use, on every verification
    "bilinear_interpolate": [
        *(Probe("""
out = bilinear_interpolate(image.requires_grad_(), y.requires_grad_(), x.requires_grad_())
result = [out] + list(torch.autograd.grad(out, (image, y, x), g))
""", lambda rng, d=d: _bilinear(rng, d)) for d in (1, 2, 3)),
        # float32 rounding in the weights
        *(Probe("result = bilinear_interpolate(image, y, x)",
                lambda rng, d=d: _bilinear(rng, d, np.float32), rtol=1e-4, atol=1e-5) for d in (1, 2, 3)),
    ],
    "deform_conv2d": [
        Probe(DEFORM_CONV, lambda rng: _deform_conv(rng, True)),
        Probe(DEFORM_CONV, lambda rng: _deform_conv(rng, False)),
        # float32: the sums run in a different order
        Probe(DEFORM_CONV, lambda rng: _deform_conv(rng, rng.random() < 0.5, np.float32),
              rtol=1e-4, atol=1e-4),
    ],
    "DeformConv2d": [
        # a new layer: conv_offset zero, every entry of the state_dict with its shape
        Probe("""
m = DeformConv2d(C, C_out, **kwargs)
result = [m.conv_offset.weight, m.conv_offset.bias,
          {k: torch.tensor(v.shape) for k, v in m.state_dict().items()}]
""", lambda rng: _layer(rng, rng.random() < 0.5)),
        Probe(LAYER, lambda rng: _layer(rng, True)),
        Probe(LAYER, lambda rng: _layer(rng, False)),
        # float32 too, as the visible tests: the sums may run in another order
        Probe(LAYER, float32(lambda rng: _layer(rng, rng.random() < 0.5)), rtol=1e-4, atol=1e-4),
    ],
    # with the course's sampler, as the notebook's tests: a wrong bilinear_interpolate
    # costs its own item only
    "deform_roi_pool": [
        Probe(_ORACLES + """
with stand_in(deform_roi_pool, bilinear_interpolate=grid_bilinear):
    out = deform_roi_pool(x.requires_grad_(), rois, offset, size, scale, ratio, gamma)
result = [out, torch.autograd.grad(out, x, g)[0]]
""", _roi_pool),
        # boxes as a list of per-image tensors, no offsets, and no boxes at all
        Probe(_ORACLES + """
boxes = [rois[rois[:, 0] == n, 1:] for n in range(int(rois[-1, 0]) + 1)]
with stand_in(deform_roi_pool, bilinear_interpolate=grid_bilinear):
    result = [deform_roi_pool(x, boxes, None, size, scale, ratio, gamma),
              deform_roi_pool(x, rois[:0], None, size)]
""", _roi_pool),
    ],
}
