"""Probes of the angular-margin exercise."""
import math

import numpy as np

from ..verify import Probe
from . import STAND_IN


def _features(rng, zero=False):
    """With ``zero``, one feature is 0 (cosines 0, as F.normalize gives; its gradient,
    1e12-sized, is left out of the probes)."""
    n, d, k = (int(v) for v in rng.integers([1, 2, 1], [7, 9, 8]))
    x = rng.normal(0, rng.uniform(0.1, 5), (n, d))
    if zero:
        x[rng.integers(n)] = 0.0
    w = rng.normal(0, rng.uniform(0.01, 2), (k, d))
    return dict(x=x, w=w, g=rng.normal(size=(n, k)))


def _cosines(rng, m2, s, m1=1.0, m3=0.0):
    """Cosines in [-0.999, 0.999] whose first targets have theta + m2 > pi (the fallback;
    for m2 = 0, cosines near -1)."""
    n, k = int(rng.integers(4, 9)), int(rng.integers(2, 7))
    cosine = rng.uniform(-0.999, 0.999, (n, k))
    target = rng.integers(0, k, n)
    past = int(rng.integers(1, 3))
    low = math.cos(m2) + 1e-3 if m2 > 0 else 0.9  # m2 >= 0.1 in the probes: low <= 0.996
    cosine[np.arange(past), target[:past]] = -rng.uniform(low, 0.999, past)
    return dict(cosine=cosine, target=target, g=rng.normal(size=(n, k)),
                s=s, m1=m1, m2=m2, m3=m3)


def _edges(rng):
    """Cosines of exactly +-1 at targets and elsewhere, a small scale (values compared loosely)."""
    draw = _cosines(rng, float(rng.uniform(0.1, 1.2)), float(rng.uniform(1, 4)),
                    m3=float(rng.choice([0.0, 0.2])))
    n = draw["cosine"].shape[0]
    draw["cosine"][np.arange(n), draw["target"]] = rng.choice([-1.0, 1.0], n)
    draw["cosine"][0, :] = 1.0
    return draw


def _pairs(rng, dtype=np.float64):
    """Scores on a 0.25 grid (many ties), genuine pairs higher on average."""
    p = int(rng.integers(12, 40))
    labels = rng.random(p) < 0.4
    labels[:2] = [True, False]
    scores = np.round((rng.normal(size=p) + labels) * 4) / 4
    n = int((~labels).sum())
    fars = [0.0, 1.0, 1 / n, int(rng.integers(0, n + 1)) / n, float(rng.uniform(0, 1))]
    return dict(scores=scores.astype(dtype), labels=labels, fars=fars)


def _float32(draw):
    """``draw`` with its cosines in float32 (the targets stay int64)."""
    def draw32(rng):
        inputs = draw(rng)
        return dict(inputs, cosine=inputs["cosine"].astype(np.float32))
    return draw32


_MARGIN = """
cosine.requires_grad_()
z = margin_logits(cosine, target, s, m1, m2, m3)
result = [z, torch.autograd.grad(z, cosine, g)[0]]
"""

# CosFace's logits stand in for the student's margin_logits, as in the notebook's tests
_LOSS = STAND_IN + """
import torch.nn.functional as F


def cosface_logits(cosine, target, s=64.0, m1=1.0, m2=0.0, m3=0.0):
    return s * (cosine - m3 * F.one_hot(target, cosine.shape[1]).to(cosine.dtype))


with stand_in(margin_loss, margin_logits=cosface_logits):
    cosine.requires_grad_()
    loss = margin_loss(cosine, target, s, m3=m3)
    result = [loss, torch.autograd.grad(loss, cosine)[0]]
"""

PROBES = {
    "normalized_logits": [
        Probe("""
x.requires_grad_(), w.requires_grad_()
c = normalized_logits(x, w)
result = [c, torch.autograd.grad(c, (x, w), g)]
""", _features),
        Probe("result = normalized_logits(x, w)",
              lambda rng: {k: v.astype(np.float32) for k, v in _features(rng, zero=True).items()}, atol=1e-6),
    ],
    "margin_logits": [
        Probe(_MARGIN, lambda rng: _cosines(rng, float(rng.uniform(0.1, 1.2)), float(rng.uniform(1, 64)))),
        Probe(_MARGIN, lambda rng: _cosines(rng, 0.0, float(rng.uniform(1, 64)), m3=float(rng.uniform(0.1, 0.5)))),
        Probe(_MARGIN, lambda rng: _cosines(rng, float(rng.uniform(0.1, 0.6)), float(rng.uniform(1, 64)),
                                            m3=float(rng.uniform(0.1, 0.3)))),
        Probe(_MARGIN, lambda rng: _cosines(rng, float(rng.choice([0.0, 0.3])), 8.0,
                                            m1=float(rng.choice([0.9, 2.0, 4.0])))),
        Probe("result = margin_logits(cosine, target, s, m1, m2, m3)",
              _float32(lambda rng: _cosines(rng, float(rng.uniform(0.1, 1.2)), 64.0)), atol=1e-4),
        # cos = +-1: a clamped arccos is off by ~sqrt(2 * clamp) there, so the values are compared
        # loosely and the gradient only for being finite
        Probe("""
cosine.requires_grad_()
z = margin_logits(cosine, target, s, m1, m2, m3)
result = [z, torch.autograd.grad(z, cosine, g)[0].isfinite().to(torch.float64)]
""", _edges, atol=1e-2),
    ],
    "margin_loss": [
        Probe(_LOSS, lambda rng: _cosines(rng, 0.0, float(rng.uniform(1, 64)), m3=float(rng.uniform(0, 0.5)))),
        Probe(_LOSS, lambda rng: _cosines(rng, 0.0, float(rng.uniform(900, 1100)))),  # exp overflows
        Probe(_LOSS, _float32(lambda rng: _cosines(rng, 0.0, 30.0, m3=0.35)), atol=1e-5),
    ],
    "tar_at_far": [
        Probe("result = [tar_at_far(scores, labels, far) for far in fars]", _pairs),
        Probe("result = [tar_at_far(scores, labels.long(), far) for far in fars]",
              lambda rng: _pairs(rng, np.float32)),
    ],
}
