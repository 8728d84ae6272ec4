"""Probes of the normalisation exercise."""
import numpy as np

from ..verify import Probe


def _image(rng, channels=None, dims=4):
    shape = [int(rng.integers(2, 5)), channels or int(rng.integers(2, 6))]
    shape += [int(rng.integers(2, 6)) for _ in range(dims - 2)]
    return rng.normal(rng.uniform(-2, 2), rng.uniform(0.5, 3), shape)


def _stats(rng, c):
    return dict(w=rng.normal(1, 0.5, c), b=rng.normal(0, 1, c),
                rm=rng.normal(0, 1, c), rv=rng.uniform(0.5, 2, c))


def _batch(rng, dims=None):
    x = _image(rng, dims=dims or int(rng.integers(2, 6)))
    return dict(x=x, momentum=float(rng.uniform(0.05, 0.5)), **_stats(rng, x.shape[1]))


def _groups(rng):
    groups, per_group = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    x = _image(rng, channels=groups * per_group)
    return dict(x=x, groups=groups, **_stats(rng, x.shape[1]))


def _backward(rng):
    x = _image(rng)
    return dict(x=x, g=rng.normal(size=x.shape), w=rng.normal(1, 0.5, x.shape[1]))


PROBES = {
    "batch_norm": [
        Probe("result = (batch_norm(x, rm, rv, w, b, True, momentum, 1e-5), rm, rv)", _batch),
        Probe("result = batch_norm(x, rm, rv, w, b, False, momentum, 1e-3)", _batch),
    ],
    "layer_norm": [
        Probe("result = layer_norm(x, x.shape[-2:], w.expand(x.shape[-2:]).contiguous(), None)",
              lambda rng: dict(x=_image(rng), w=rng.normal(1, 0.5, 1))),
        Probe("result = layer_norm(x, x.shape[1:])", lambda rng: dict(x=_image(rng, dims=3))),
    ],
    "instance_norm": [
        Probe("result = instance_norm(x, weight=w, bias=b)", lambda rng: _groups(rng)),
        Probe("result = (instance_norm(x, rm, rv, w, b, True, 0.3), rm, rv)",
              lambda rng: _batch(rng, dims=int(rng.integers(3, 6)))),
    ],
    "group_norm": [
        # an eps far above 1e-5 tells sqrt(var + eps) from sqrt(var) + eps on every draw
        Probe("result = group_norm(x, groups, w, b, eps)",
              lambda rng: dict(_groups(rng), eps=float(rng.uniform(0.05, 0.5)))),
        Probe("result = group_norm(x, 1)", _groups),
    ],
    "BatchNorm2d": [
        Probe("""
m = BatchNorm2d(x.shape[1], momentum=momentum)
m.load_state_dict({"weight": w, "bias": b, "running_mean": rm, "running_var": rv,
                   "num_batches_tracked": m.num_batches_tracked})
outputs = [m(x), m(x * 2 + 1)]
m.eval()
result = outputs + [m(x), dict(m.state_dict())]
""", lambda rng: {k: v.astype(np.float32) if isinstance(v, np.ndarray) else v
                  for k, v in _batch(rng, dims=4).items()}),
        Probe("""
m = BatchNorm2d(x.shape[1], momentum=None, affine=False)
result = [m(x), m(x + 1), dict(m.state_dict())]
""", lambda rng: dict(x=_image(rng).astype(np.float32))),
    ],
    "batch_norm_backward": [
        Probe("result = batch_norm_backward(g, x, w, 1e-5)", _backward, rtol=1e-4),
        Probe("result = batch_norm_backward(g, x)", _backward, rtol=1e-4),
    ],
}
