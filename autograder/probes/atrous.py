"""Probes of the dilated convolution exercise."""
import numpy as np

from ..verify import Probe
from . import MODULE_HELPERS, float32



def _ints(rng, low, high, n=2):
    return [int(v) for v in rng.integers(low, high, n)]


def _pair(rng, values, mixed):
    """Two of ``values``; ``mixed``: two different ones, so a swapped H and W shows."""
    return [int(v) for v in rng.choice(values, 2, replace=not mixed)]


def _fits(rng, kernel, padding, dilation):
    """A random input size that the kernel, dilated, fits once padded."""
    return [max(d * (k - 1) + 1 - 2 * p, 1) + int(rng.integers(0, 5))
            for k, p, d in zip(kernel, padding, dilation)]


def _conv(rng, dtype=np.float64, mixed=False, padding=None):
    groups = int(rng.integers(2, 4)) if mixed else int(rng.integers(1, 4))
    c_in = groups * int(rng.integers(1, 3))
    c_out = groups * (2 if mixed else int(rng.integers(1, 3)))
    kernel = [int(k) for k in rng.permutation([rng.integers(2, 4), rng.integers(1, 4)])]
    stride, dilation = _pair(rng, [1, 2], mixed), _pair(rng, [1, 2, 3], mixed)
    padding = padding or _pair(rng, [0, 1, 2], mixed)
    size = [n + 2 * mixed for n in _fits(rng, kernel, padding, dilation)]  # stride 2 shows
    out = [(n + 2 * p - d * (k - 1) - 1) // s + 1
           for n, p, d, k, s in zip(size, padding, dilation, kernel, stride)]
    n = int(rng.integers(1, 4))
    return dict(x=rng.normal(size=(n, c_in, *size)).astype(dtype),
                w=rng.normal(size=(c_out, c_in // groups, *kernel)).astype(dtype),
                b=rng.normal(size=c_out).astype(dtype), g=rng.normal(size=(n, c_out, *out)),
                stride=stride, padding=padding, dilation=dilation, groups=groups,
                bias=bool(rng.integers(2)))


def _transposed(rng):
    inputs = _conv(rng, padding=[0, 0])
    return {**inputs, "x": inputs["x"].transpose(0, 1, 3, 2).copy()}


def _layers(rng):
    return [_ints(rng, 1, 5, 3) for _ in range(int(rng.integers(1, 7)))]


def _coverage(rng):
    # equal rates first: gridding, and pixels reached along several paths
    equal = [int(rng.integers(1, 4))] * int(rng.integers(2, 4))
    cases = [[_ints(rng, 1, 6, int(rng.integers(0, 4))), int(rng.integers(1, 5))] for _ in range(3)]
    return dict(cases=[[equal, int(rng.integers(2, 5))]] + cases)


def _separable(rng):
    kernel, padding = _pair(rng, [2, 3], True), _pair(rng, [0, 1, 2], True)
    dilation, c_in, c_out = _pair(rng, [1, 2, 3], True), *_ints(rng, 1, 5)
    size = [n + 2 for n in _fits(rng, kernel, padding, dilation)]  # stride 2 shows
    return dict(x=rng.normal(size=(2, c_in, *size)), c_in=c_in, c_out=c_out,
                kernel=kernel, stride=_pair(rng, [1, 2], True),
                padding=padding, dilation=dilation, seed=int(rng.integers(2**31)))


def _square(rng):
    k, c_in, c_out = int(rng.integers(1, 4)), *_ints(rng, 1, 5)
    return dict(x=rng.normal(size=(2, c_in, *_ints(rng, k, k + 4))), c_in=c_in, c_out=c_out, k=k,
                seed=int(rng.integers(2**31)))


def _aspp(rng, rates, smallest=1):
    c_in, c_out = _ints(rng, 1, 6)
    return dict(x=rng.normal(size=(int(rng.integers(2, 4)), c_in, *_ints(rng, smallest, 7))),
                c_in=c_in, c_out=c_out, rates=rates, seed=int(rng.integers(2**31)))


def _rates(rng):
    return [int(r) for r in rng.choice(np.arange(2, 6), int(rng.integers(1, 4)), replace=False)]


def _duc(rng):
    c_in, classes = _ints(rng, 1, 6)
    return dict(x=rng.normal(size=(2, c_in, *_ints(rng, 1, 6))), c_in=c_in, classes=classes,
                r=int(rng.integers(2, 5)), seed=int(rng.integers(2**31)))


_ASPP = MODULE_HELPERS + """
m = fill(ASPP(c_in, rates, c_out).to(x.dtype), seed)
m.eval()
y = m(x)
m.train()
with torch.random.fork_rng():  # the same dropout mask on both sides
    torch.manual_seed(seed)
    z = m(x)
result = [y, z, dict(m.state_dict())]
"""

PROBES = {
    "conv2d": [
        Probe("""
for t in (x, w, b):
    t.requires_grad_()
y = conv2d(x, w, b, tuple(stride), tuple(padding), tuple(dilation), groups)
result = [y, torch.autograd.grad(y, (x, w, b), g)]
""", lambda rng: _conv(rng, mixed=True)),
        Probe("""
x = x.transpose(2, 3)  # a non-contiguous input
result = [conv2d(x, w, None, 1, pad, tuple(dilation), groups) for pad in ("same", "valid", 0)]
""", _transposed),
        # float32: the sums may run in another order than the reference's (the tests' tolerance)
        Probe("result = conv2d(x, w, b if bias else None, tuple(stride), tuple(padding), "
              "tuple(dilation), groups)", lambda rng: _conv(rng, np.float32), rtol=1e-4, atol=1e-4),
    ],
    # float(): the tests compare with ==, so 7 and 7.0 both pass
    "receptive_field": [
        Probe("result = [float(receptive_field([tuple(layer) for layer in layers]))\n"
              "          for layers in stacks]",
              lambda rng: dict(stacks=[[]] + [_layers(rng) for _ in range(4)])),
    ],
    "coverage": [
        Probe("result = [coverage(tuple(d), k) for d, k in cases] + [coverage(tuple(cases[0][0]))]",
              _coverage),
    ],
    "DepthwiseSeparableConv2d": [
        Probe(MODULE_HELPERS + """
m = fill(DepthwiseSeparableConv2d(c_in, c_out, tuple(kernel), tuple(stride), tuple(padding),
                                  tuple(dilation), True).to(x.dtype), seed)
result = [m(x), dict(m.state_dict())]
""", _separable),
        Probe(MODULE_HELPERS + "m = fill(DepthwiseSeparableConv2d(c_in, c_out, k).to(x.dtype), seed)\n"
              "result = [m(x), dict(m.state_dict())]", _square),
        # float32 too, as the visible tests: the sums may run in another order
        Probe(MODULE_HELPERS + "m = fill(DepthwiseSeparableConv2d(c_in, c_out, k).to(x.dtype), seed)\n"
              "result = [m(x), dict(m.state_dict())]", float32(_square), rtol=1e-4, atol=1e-4),
    ],
    "ASPP": [
        Probe(_ASPP, lambda rng: _aspp(rng, _rates(rng), smallest=2)),
        Probe(_ASPP, lambda rng: _aspp(rng, _ints(rng, 1, 3, int(rng.integers(0, 2))))),
        Probe(_ASPP, float32(lambda rng: _aspp(rng, _rates(rng), smallest=2)), rtol=1e-4, atol=1e-4),
    ],
    "DUC": [
        Probe(MODULE_HELPERS + "m = fill(DUC(c_in, classes, r).to(x.dtype), seed)\n"
              "result = [m(x), dict(m.state_dict())]", _duc),
        Probe(MODULE_HELPERS + "m = fill(DUC(c_in, classes, r).to(x.dtype), seed)\n"
              "result = [m(x), dict(m.state_dict())]", float32(_duc), rtol=1e-4, atol=1e-4),
    ],
}
