"""Probes of the normalisation exercise."""
from pathlib import Path

from ..verify import Probe
from . import STAND_IN, float32


# F.batch_norm's signature and in-place running statistics over the oracles' loop port
LOOP_BATCH_NORM = STAND_IN + (Path(__file__).parent.parent / "oracles" / "norms_loops.py").read_text() + """

def loop_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5):
    with torch.no_grad():  # the oracle reads the module's parameters as Python floats
        out, mean, var = batch_norm(input, running_mean, running_var, weight, bias, training,
                                    momentum, eps)
    if training and running_mean is not None:
        running_mean.copy_(mean)
        running_var.copy_(var)
    return out.to(input.dtype)
"""

# Every verification sends each function inputs of every rank the tests use, so an
# answer written for 4-D input only fails the probes as it fails the tests.
RANKS = (2, 3, 4, 5)


def _image(rng, channels=None, dims=None):
    """(N, C, *) of ``dims`` dimensions (2 to 5 if not given)."""
    dims = dims or int(rng.integers(2, 6))
    shape = [int(rng.integers(2, 5)), channels or int(rng.integers(2, 6))]
    shape += [int(rng.integers(2, 6)) for _ in range(dims - 2)]
    return rng.normal(rng.uniform(-2, 2), rng.uniform(0.5, 3), shape)


def _stats(rng, c):
    return dict(w=rng.normal(1, 0.5, c), b=rng.normal(0, 1, c),
                rm=rng.normal(0, 1, c), rv=rng.uniform(0.5, 2, c))


def _batch(rng, dims=None):
    x = _image(rng, dims=dims)
    return dict(x=x, momentum=float(rng.uniform(0.05, 0.5)), **_stats(rng, x.shape[1]))


def _layer(rng, dims, k):
    """Normalised over the last k dimensions."""
    x = _image(rng, dims=dims)
    return dict(x=x, k=k, w=rng.normal(1, 0.5, x.shape[-k:]), b=rng.normal(0, 1, x.shape[-k:]))


def _groups(rng, dims=None):
    groups, per_group = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    x = _image(rng, channels=groups * per_group, dims=dims)
    return dict(x=x, groups=groups, **_stats(rng, x.shape[1]))


def _backward(rng, dims=None):
    x = _image(rng, dims=dims)
    return dict(x=x, g=rng.normal(size=x.shape), w=rng.normal(1, 0.5, x.shape[1]))


PROBES = {
    "batch_norm": [
        *(Probe("result = (batch_norm(x, rm, rv, w, b, True, momentum, 1e-5), rm, rv)",
                lambda rng, d=d: _batch(rng, d)) for d in RANKS),
        Probe("result = batch_norm(x, rm, rv, w, b, False, momentum, 1e-3)", _batch),
        Probe("result = (batch_norm(x, rm, rv, w, b, True, momentum, 1e-5), rm, rv)",
              float32(lambda rng: _batch(rng, 4)), rtol=1e-4, atol=1e-5),
    ],
    "layer_norm": [
        *(Probe("result = layer_norm(x, x.shape[-k:], w, b, 1e-3)",
                lambda rng, d=d, k=k: _layer(rng, d, k)) for d, k in [(2, 1), (3, 2), (4, 3), (5, 2)]),
        Probe("result = layer_norm(x, x.shape[1:])", lambda rng: dict(x=_image(rng))),
    ],
    "instance_norm": [
        *(Probe("result = instance_norm(x, weight=w, bias=b)", lambda rng, d=d: _groups(rng, d))
          for d in RANKS[1:]),
        Probe("result = (instance_norm(x, rm, rv, w, b, True, 0.3), rm, rv)",
              lambda rng: _batch(rng, dims=int(rng.integers(3, 6)))),
        Probe("result = instance_norm(x)", float32(lambda rng: dict(x=_image(rng, dims=4))),
              rtol=1e-4, atol=1e-5),
    ],
    "group_norm": [
        # an eps far above 1e-5 tells sqrt(var + eps) from sqrt(var) + eps on every draw
        *(Probe("result = group_norm(x, groups, w, b, eps)",
                lambda rng, d=d: dict(_groups(rng, d), eps=float(rng.uniform(0.05, 0.5))))
          for d in RANKS),
        Probe("result = group_norm(x, 1)", _groups),
    ],
    # the module with a batch_norm not the student's, as the notebook's tests give it
    # PyTorch's (which verification refuses the answers): the oracles' loops
    "BatchNorm2d": [
        Probe(LOOP_BATCH_NORM + """
with stand_in(BatchNorm2d, batch_norm=loop_batch_norm):
    m = BatchNorm2d(x.shape[1], momentum=momentum)
    m.load_state_dict({"weight": w, "bias": b, "running_mean": rm, "running_var": rv,
                       "num_batches_tracked": m.num_batches_tracked})
    outputs = [m(x), m(x * 2 + 1)]
    m.eval()
    result = outputs + [m(x), dict(m.state_dict())]
""", float32(lambda rng: _batch(rng, dims=4)), rtol=1e-4, atol=1e-5),
        Probe(LOOP_BATCH_NORM + """
with stand_in(BatchNorm2d, batch_norm=loop_batch_norm):
    m = BatchNorm2d(x.shape[1], momentum=None, affine=False).double()
    result = [m(x), m(x + 1), dict(m.state_dict())]
""", lambda rng: dict(x=_image(rng, dims=4))),
    ],
    "batch_norm_backward": [
        *(Probe("result = batch_norm_backward(g, x, w, 1e-5)", lambda rng, d=d: _backward(rng, d),
                rtol=1e-4) for d in RANKS),
        Probe("result = batch_norm_backward(g, x)", _backward, rtol=1e-4),
    ],
}
