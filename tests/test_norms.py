"""Tests of the reference norms in solutions/norms.py.

Oracles: torch.nn.functional / nn.BatchNorm2d (the reference claims to be a
drop-in replacement), the loop references in autograder/oracles/norms_loops.py (plain Python
means and variances, no torch reduction), hand-computed numbers for the pinned
conventions, torch.autograd.gradcheck, and finite differences for the
closed-form BatchNorm backward.
"""
import functools
import inspect
import math
import re
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.oracles import norms_loops as S
from solutions import norms as R
from tests import helpers
from tests.helpers import (Mistake, bib_entries, check_probe, edit, probe_cases, prose, quick_rows,
                           sentences_with, visible_text)


DT = torch.float64
LAYOUTS = ["contiguous", "transposed", "strided"]
AFFINE = ["none", "weight", "bias", "both"]


# --------------------------------------------------------------------------- helpers

close = functools.partial(helpers.close, tol=1e-10, rtol=1e-9)


def make_input(shape, layout="contiguous", seed=0):
    """float64 input whose channels (dim 1) have different means and scales.

    ``transposed``: a view with every dim's stride reversed (a permuted copy
    permuted back); ``strided``: every other element of a larger buffer along
    the last dim. Both hold the same values as the contiguous tensor.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=DT)
    if len(shape) >= 2:
        C = shape[1]
        per_c = (1, C) + (1,) * (len(shape) - 2)
        scale = (0.5 + torch.arange(C, dtype=DT)).view(per_c)
        offset = (3.0 * torch.arange(C, dtype=DT) - 2.0).view(per_c)
        x = x * scale + offset
    else:
        x = 2 * x + 1
    if layout == "contiguous":
        return x
    if layout == "transposed":
        rev = list(reversed(range(x.dim())))
        y = x.permute(rev).contiguous().permute(rev)
    elif layout == "strided":
        base = torch.full((*shape[:-1], 2 * shape[-1] + 1), float("nan"), dtype=DT)
        base[..., 1::2] = x
        y = base[..., 1::2]
    else:
        raise ValueError(layout)
    assert not y.is_contiguous() and torch.equal(y, x)
    return y


def make_affine(shape, affine, layout="contiguous", seed=1):
    """(weight, bias) of ``shape`` or None each, per the ``affine`` option."""
    g = torch.Generator().manual_seed(seed)
    w = 1 + 0.5 * torch.randn(shape, generator=g, dtype=DT)
    b = 0.5 * torch.randn(shape, generator=g, dtype=DT)
    if layout == "strided":  # non-contiguous parameters as well
        w = torch.stack([w, torch.full_like(w, float("nan"))], -1)[..., 0]
        b = torch.stack([b, torch.full_like(b, float("nan"))], -1)[..., 0]
    return (w if affine in ("weight", "both") else None,
            b if affine in ("bias", "both") else None)


def make_running(C, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(C, generator=g, dtype=DT), 0.5 + torch.rand(C, generator=g, dtype=DT)


def clones(*ts):
    return [None if t is None else t.clone() for t in ts]


# ---------------------------------------------------------------- signatures

@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "instance_norm", "group_norm"])
def test_signature_matches_functional(name):
    ours = inspect.signature(getattr(R, name)).parameters
    theirs = inspect.signature(getattr(F, name)).parameters
    assert [(p.name, p.default, p.kind) for p in ours.values()] == \
           [(p.name, p.default, p.kind) for p in theirs.values()]


def test_module_signature_matches_nn_for_shared_arguments():
    ours = list(inspect.signature(R.BatchNorm2d.__init__).parameters.values())
    theirs = list(inspect.signature(nn.BatchNorm2d.__init__).parameters.values())
    assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in theirs[:len(ours)]]


# ---------------------------------------------------------------- batch_norm vs F

BN_SHAPES = [(8, 3), (5, 4, 7), (1, 3, 6), (4, 3, 5, 6), (1, 2, 4, 5), (2, 3, 3, 4, 5),
             (1, 3, 2, 3, 2)]
HPARAMS = [(1e-5, 0.1), (1e-3, 0.5), (0.5, 1.0)]  # (eps, momentum)


@pytest.mark.parametrize("eps,momentum", HPARAMS)
@pytest.mark.parametrize("mode", ["train", "train_nostats", "eval"])
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_matches_functional(shape, layout, affine, mode, eps, momentum):
    x = make_input(shape, layout)
    x_before = x.clone()
    C = shape[1]
    w, b = make_affine((C,), affine, layout)
    training = mode != "eval"
    rm, rv = (None, None) if mode == "train_nostats" else make_running(C)
    rm_t, rv_t = clones(rm, rv)
    out = R.batch_norm(x, rm, rv, w, b, training, momentum, eps)
    expected = F.batch_norm(x, rm_t, rv_t, w, b, training, momentum, eps)
    close(out, expected, "output")
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, x_before), "input was modified"
    if rm is not None:  # updated in place exactly as F does (unchanged in eval)
        close(rm, rm_t, "running_mean")
        close(rv, rv_t, "running_var")
        if training and momentum > 0:
            assert not torch.equal(rm, make_running(C)[0])


@pytest.mark.parametrize("affine", ["none", "both"])
def test_batch_norm_eval_one_value_per_channel(affine):
    # Batch of 1 with no spatial dims is legal in eval mode.
    x = make_input((1, 4))
    w, b = make_affine((4,), affine)
    rm, rv = make_running(4)
    close(R.batch_norm(x, rm, rv, w, b, False), F.batch_norm(x, rm, rv, w, b, False))


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.3, 1.0])
def test_batch_norm_repeated_updates_match_functional(momentum):
    rm, rv = make_running(3)
    rm_t, rv_t = clones(rm, rv)
    for step in range(5):
        x = make_input((4, 3, 2, 3), seed=10 + step)
        close(R.batch_norm(x, rm, rv, None, None, True, momentum),
              F.batch_norm(x, rm_t, rv_t, None, None, True, momentum))
    close(rm, rm_t)
    close(rv, rv_t)


def test_batch_norm_float32_running_stats_float32():
    x = make_input((6, 3, 4)).float()
    rm, rv = (t.float() for t in make_running(3))
    rm_t, rv_t = clones(rm, rv)
    out = R.batch_norm(x, rm, rv, training=True)
    exp = F.batch_norm(x, rm_t, rv_t, training=True)
    assert out.dtype == rm.dtype == torch.float32
    torch.testing.assert_close(out, exp)
    torch.testing.assert_close(rm, rm_t)
    torch.testing.assert_close(rv, rv_t)


# ---------------------------------------------------------------- instance_norm vs F

IN_SHAPES = [(4, 3, 7), (1, 3, 6), (2, 3, 4, 5), (1, 2, 3, 3), (2, 3, 2, 3, 4)]


@pytest.mark.parametrize("eps,momentum", [(1e-5, 0.1), (0.5, 0.7)])
@pytest.mark.parametrize("mode", ["input_stats", "input_stats_tracked", "running_stats"])
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", IN_SHAPES, ids=str)
def test_instance_norm_matches_functional(shape, layout, affine, mode, eps, momentum):
    x = make_input(shape, layout)
    x_before = x.clone()
    C = shape[1]
    w, b = make_affine((C,), affine, layout)
    rm, rv = (None, None) if mode == "input_stats" else make_running(C)
    rm_t, rv_t = clones(rm, rv)
    use_input_stats = mode != "running_stats"
    out = R.instance_norm(x, rm, rv, w, b, use_input_stats, momentum, eps)
    expected = F.instance_norm(x, rm_t, rv_t, w, b, use_input_stats, momentum, eps)
    close(out, expected, "output")
    assert torch.equal(x, x_before), "input was modified"
    if rm is not None:
        close(rm, rm_t, "running_mean")
        close(rv, rv_t, "running_var")
        if not use_input_stats:
            assert torch.equal(rm, make_running(C)[0]), "running stats changed"


# ---------------------------------------------------------------- layer_norm vs F

def _ln_cases():
    cases = []
    for shape in [(4, 5), (3, 4, 5), (2, 3, 4, 5), (2, 2, 3, 2, 3), (1, 3, 4)]:
        for k in range(1, len(shape) + 1):
            ns = tuple(shape[len(shape) - k:])
            forms = [ns, list(ns), torch.Size(ns)] + ([ns[0]] if k == 1 else [])
            cases.append((shape, forms[(len(shape) + k) % len(forms)]))
            if k == 1:
                cases.append((shape, ns[0]))  # an int, as nn.LayerNorm accepts
    return cases


@pytest.mark.parametrize("eps", [1e-5, 0.3])
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,normalized_shape", _ln_cases(), ids=str)
def test_layer_norm_matches_functional(shape, normalized_shape, layout, affine, eps):
    x = make_input(shape, layout)
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    w, b = make_affine(ns, affine, layout)
    out = R.layer_norm(x, normalized_shape, w, b, eps)
    close(out, F.layer_norm(x, ns, w, b, eps))


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_layer_norm_one_dim_input(layout):
    x = make_input((9,), layout)
    w, b = make_affine((9,), "both")
    close(R.layer_norm(x, (9,), w, b), F.layer_norm(x, (9,), w, b))


# ---------------------------------------------------------------- group_norm vs F

GN_CASES = [((6, 4), 1), ((6, 4), 2), ((6, 4), 4), ((1, 6, 5), 3), ((3, 6, 5), 6),
            ((2, 6, 3, 4), 1), ((2, 6, 3, 4), 2), ((1, 4, 3, 3), 4), ((2, 6, 2, 3, 2), 3)]


@pytest.mark.parametrize("eps", [1e-5, 0.3])
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,groups", GN_CASES, ids=str)
def test_group_norm_matches_functional(shape, groups, layout, affine, eps):
    x = make_input(shape, layout)
    w, b = make_affine((shape[1],), affine, layout)
    close(R.group_norm(x, groups, w, b, eps), F.group_norm(x, groups, w, b, eps))


@pytest.mark.parametrize("shape", [(2, 6, 5), (3, 4, 2, 3)], ids=str)
def test_group_norm_extremes_are_layer_and_instance_norm(shape):
    x = make_input(shape)
    C = shape[1]
    close(R.group_norm(x, 1), F.layer_norm(x, x.shape[1:]))
    close(R.group_norm(x, C), F.instance_norm(x))


@pytest.mark.parametrize("fn", [
    lambda x: R.batch_norm(x, None, None, training=True),
    lambda x: R.layer_norm(x, x.shape[1:]),
    lambda x: R.instance_norm(x),
    lambda x: R.group_norm(x, 2),
    lambda x: R.batch_norm_backward(torch.cos(torch.arange(x.numel(), dtype=x.dtype)).view(x.shape), x)[0],
], ids=["batch_norm", "layer_norm", "instance_norm", "group_norm", "batch_norm_backward"])
def test_float32_with_the_mean_ten_standard_deviations_from_zero(fn):
    # E[x^2] - mean^2 alone would lose about (mean / std)^2 * 6e-8 of the variance in
    # float32, 1e-4 of the output here: the reference takes it again from the centred
    # input. PyTorch's kernels agree with float64 to about 2e-6.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, 16, 16, generator=g) + 10
    out = fn(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), fn(x.double()), rtol=0, atol=1e-5)


@pytest.mark.parametrize("fn", [
    lambda x: R.batch_norm(x, None, None, training=True),
    lambda x: R.layer_norm(x, x.shape[1:]),
    lambda x: R.instance_norm(x),
    lambda x: R.group_norm(x, 3),
    lambda x: R.batch_norm_backward(torch.ones_like(x), x)[0],
], ids=["batch_norm", "layer_norm", "instance_norm", "group_norm", "batch_norm_backward"])
def test_float32_nearly_constant_input_far_from_zero_stays_finite(fn):
    # std 3e-4 around 255: E[x^2] - mean^2 would round to about +-4e-3, often
    # below -eps, and its square root would be NaN.
    g = torch.Generator().manual_seed(0)
    x = 255 + 1e-3 * torch.rand(4, 3, 7, 7, generator=g)
    assert torch.isfinite(fn(x)).all()


# ---------------------------------------------------------------- the last step, x * scale + shift

@pytest.mark.parametrize("length,tiles", [(192, True), (3136, True), (49, False), (30, False)])
@pytest.mark.parametrize("per", ["row", "channel"])
def test_scale_shift_is_x_times_scale_plus_shift(length, tiles, per):
    # rows of 192 and 3136 values have a tile length in 16..64 with four tiles or more (48,
    # 64): one addcmul; 49 and 30 have none: a multiply, then an add
    x = make_input((3, 4, length))
    scale, shift = (make_input((3 if per == "row" else 1, 4, 1), seed=s) for s in (1, 2))
    with helpers.OpRecorder() as recorder:
        got = R._scale_shift(x, scale, shift)
    close(got, x * scale + shift)
    assert any("addcmul" in op for op in recorder.ops) == tiles, recorder.ops
    out = torch.empty_like(x)
    assert R._scale_shift(x, scale, shift, out=out).data_ptr() == out.data_ptr()
    close(out, x * scale + shift)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "instance_norm", "group_norm",
                                  "batch_norm_backward"])
def test_norms_with_rows_cut_into_tiles_match_torch(name, layout):
    # rows of H * W = 8 * 24 = 192 values, long enough for _scale_shift's tiles (the shapes
    # elsewhere in this file are mostly too short), forward and backward, in every layout
    x = make_input((2, 4, 8, 24), layout)
    w, b = make_affine((4,), "both", layout)
    grad_out = make_input((2, 4, 8, 24), seed=3)
    calls = {
        "batch_norm": lambda m, x, w, b: m.batch_norm(x, None, None, w, b, training=True),
        "layer_norm": lambda m, x, w, b: m.layer_norm(
            x, x.shape[1:], *(t.view(-1, 1, 1).expand(x.shape[1:]) for t in (w, b))),
        "instance_norm": lambda m, x, w, b: m.instance_norm(x, weight=w, bias=b),
        "group_norm": lambda m, x, w, b: m.group_norm(x, 2, w, b),
    }

    backward_only = name == "batch_norm_backward"

    def run(module):
        """(out, grad_input, grad_weight, grad_bias); batch_norm_backward's, the gradients."""
        if backward_only and module is R:
            return R.batch_norm_backward(grad_out, x, w)
        xl, wl, bl = _leaf(x), _leaf(w), _leaf(b)
        out = calls["batch_norm" if backward_only else name](module, xl, wl, bl)
        grads = torch.autograd.grad(out, (xl, wl, bl), grad_out)
        return grads if backward_only else (out, *grads)

    with helpers.OpRecorder() as recorder:
        ours = run(R)
    # tiled: one addcmul each time, never the two-pass fallback's add_
    assert "aten.add_.Tensor" not in recorder.ops, recorder.ops
    whats = ["out", "grad_input", "grad_weight", "grad_bias"][backward_only:]
    for what, a, e in zip(whats, ours, run(F)):
        close(a, e, what)


# ---------------------------------------------------------------- vs slow loop references

SLOW_SHAPES = [(6, 3), (4, 3, 5), (1, 2, 6), (3, 2, 3, 4), (2, 2, 2, 3, 2)]


@pytest.mark.parametrize("training,momentum,eps", [(True, 0.1, 1e-5), (True, 0.6, 0.2),
                                                   (False, 0.1, 1e-5), (False, 0.1, 0.2)])
@pytest.mark.parametrize("affine", ["none", "both"])
@pytest.mark.parametrize("shape", SLOW_SHAPES, ids=str)
def test_batch_norm_matches_slow_loops(shape, affine, training, momentum, eps):
    x = make_input(shape, "transposed" if len(shape) > 2 else "contiguous")
    w, b = make_affine((shape[1],), affine)
    rm, rv = make_running(shape[1])
    exp, exp_rm, exp_rv = S.batch_norm(x, rm, rv, w, b, training, momentum, eps)
    close(R.batch_norm(x, rm, rv, w, b, training, momentum, eps), exp, "output")
    close(rm, exp_rm, "running_mean")
    close(rv, exp_rv, "running_var")


@pytest.mark.parametrize("use_input_stats,tracked", [(True, False), (True, True), (False, True)])
@pytest.mark.parametrize("affine", ["none", "both"])
@pytest.mark.parametrize("shape", [s for s in SLOW_SHAPES if len(s) > 2], ids=str)
def test_instance_norm_matches_slow_loops(shape, affine, use_input_stats, tracked):
    x = make_input(shape)
    w, b = make_affine((shape[1],), affine)
    rm, rv = make_running(shape[1]) if tracked else (None, None)
    exp, exp_rm, exp_rv = S.instance_norm(x, rm, rv, w, b, use_input_stats, 0.3, 1e-4)
    close(R.instance_norm(x, rm, rv, w, b, use_input_stats, 0.3, 1e-4), exp, "output")
    if tracked:
        close(rm, exp_rm, "running_mean")
        close(rv, exp_rv, "running_var")


@pytest.mark.parametrize("affine", ["none", "both"])
@pytest.mark.parametrize("shape,k", [((6, 3), 1), ((4, 3, 5), 1), ((4, 3, 5), 2),
                                     ((3, 2, 3, 4), 3), ((2, 2, 2, 3, 2), 2)], ids=str)
def test_layer_norm_matches_slow_loops(shape, k, affine):
    x = make_input(shape)
    ns = shape[len(shape) - k:]
    w, b = make_affine(ns, affine)
    close(R.layer_norm(x, ns, w, b, 1e-3), S.layer_norm(x, ns, w, b, 1e-3))


@pytest.mark.parametrize("affine", ["none", "both"])
@pytest.mark.parametrize("shape,groups", [((5, 4), 2), ((3, 6, 4), 3), ((2, 6, 3, 2), 2),
                                          ((2, 4, 2, 3), 4), ((1, 4, 2, 2, 3), 1)], ids=str)
def test_group_norm_matches_slow_loops(shape, groups, affine):
    x = make_input(shape, "strided")
    w, b = make_affine((shape[1],), affine)
    close(R.group_norm(x, groups, w, b, 1e-3), S.group_norm(x, groups, w, b, 1e-3))


# ---------------------------------------------------------------- pinned conventions, by hand

def test_batch_norm_normalises_with_biased_variance():
    # One channel holding 1, 2, 3, 4: mean 2.5, biased var 1.25 (unbiased 5/3).
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT).view(2, 1, 2)
    out = R.batch_norm(x, None, None, training=True, eps=0.0)
    expected = (torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT) - 2.5) / math.sqrt(1.25)
    close(out.flatten(), expected)


@pytest.mark.parametrize("fn", [
    lambda x: R.layer_norm(x.view(1, 4), (4,), eps=0.0),
    lambda x: R.instance_norm(x.view(1, 1, 4), eps=0.0),
    lambda x: R.group_norm(x.view(1, 2, 2), 1, eps=0.0),
], ids=["layer_norm", "instance_norm", "group_norm"])
def test_other_norms_use_biased_variance(fn):
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT)
    close(fn(x).flatten(), (x - 2.5) / math.sqrt(1.25))


def test_group_norm_eps_inside_square_root():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT).view(1, 2, 2)
    eps = 0.75  # sqrt(1.25 + 0.75) = sqrt(2); sqrt(1.25) + 0.75 would differ
    close(R.group_norm(x, 1, eps=eps).flatten(), (x.flatten() - 2.5) / math.sqrt(2.0))


def test_group_norm_weight_is_per_channel():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT).view(1, 2, 2)
    w = torch.tensor([2.0, -1.0], dtype=DT)
    b = torch.tensor([0.5, 10.0], dtype=DT)
    x_hat = (torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT) - 2.5) / math.sqrt(1.25)
    expected = torch.cat([x_hat[:2] * 2.0 + 0.5, x_hat[2:] * -1.0 + 10.0]).view(1, 2, 2)
    close(R.group_norm(x, 1, w, b, eps=0.0), expected)


def test_batch_norm_running_var_uses_unbiased_variance():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT).view(4, 1)
    rm = torch.zeros(1, dtype=DT)
    rv = torch.ones(1, dtype=DT)
    R.batch_norm(x, rm, rv, training=True, momentum=0.1)
    close(rm, torch.tensor([0.25], dtype=DT))                    # 0.9 * 0 + 0.1 * 2.5
    close(rv, torch.tensor([0.9 + 0.1 * 5 / 3], dtype=DT))       # unbiased 5/3, not 1.25


def test_instance_norm_running_stats_average_instances_unbiased():
    # Instances (1, 2, 3, 4) and (2, 4, 6, 8): means 2.5, 5; unbiased vars 5/3, 20/3.
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0]], dtype=DT).view(2, 1, 4)
    rm = torch.zeros(1, dtype=DT)
    rv = torch.ones(1, dtype=DT)
    R.instance_norm(x, rm, rv, momentum=0.1)
    close(rm, torch.tensor([0.1 * 3.75], dtype=DT))
    close(rv, torch.tensor([0.9 + 0.1 * 25 / 6], dtype=DT))


@pytest.mark.parametrize("momentum,expected_mean", [(1.0, 2.5), (0.0, 4.0), (0.25, 3.625)])
def test_batch_norm_momentum_weights_the_new_batch(momentum, expected_mean):
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT).view(4, 1)
    rm = torch.tensor([4.0], dtype=DT)   # batch mean is 2.5
    rv = torch.tensor([3.0], dtype=DT)   # batch unbiased var is 5/3
    R.batch_norm(x, rm, rv, training=True, momentum=momentum)
    close(rm, torch.tensor([expected_mean], dtype=DT))
    close(rv, torch.tensor([(1 - momentum) * 3.0 + momentum * 5 / 3], dtype=DT))


def test_batch_norm_eval_uses_running_stats_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT).view(4, 1)
    rm = torch.tensor([1.0], dtype=DT)
    rv = torch.tensor([4.0], dtype=DT)
    out = R.batch_norm(x, rm, rv, torch.tensor([3.0], dtype=DT), torch.tensor([-1.0], dtype=DT),
                       training=False, eps=0.0)
    close(out.flatten(), (torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT) - 1) / 2 * 3 - 1)
    close(rm, torch.tensor([1.0], dtype=DT))
    close(rv, torch.tensor([4.0], dtype=DT))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_training_is_explicit_not_grad_mode(training):
    x = make_input((5, 3, 4))
    w, b = make_affine((3,), "both")
    rm0, rv0 = make_running(3)
    outs, stats = [], []
    for ctx, req in [(torch.enable_grad, True), (torch.no_grad, False), (torch.enable_grad, False)]:
        rm, rv = clones(rm0, rv0)
        xi = x.clone().requires_grad_(req)
        with ctx():
            outs.append(R.batch_norm(xi, rm, rv, w, b, training=training).detach())
        stats.append((rm, rv))
    rm_e, rv_e = clones(rm0, rv0)
    expected = F.batch_norm(x, rm_e, rv_e, w, b, training=training)
    for out, (rm, rv) in zip(outs, stats):
        close(out, expected)
        close(rm, rm_e)
        close(rv, rv_e)
    if training:  # batch statistics, not the running ones, even under no_grad
        close(outs[1], F.batch_norm(x, None, None, w, b, training=True))
    else:  # running statistics even with grad enabled and an input requiring grad
        close(outs[0], (x - rm0.view(1, 3, 1)) / torch.sqrt(rv0.view(1, 3, 1) + 1e-5)
              * w.view(1, 3, 1) + b.view(1, 3, 1))
        assert torch.equal(rm_e, rm0)


def test_module_mode_is_train_eval_not_grad_mode():
    torch.manual_seed(0)
    m = R.BatchNorm2d(3).double()
    x = make_input((4, 3, 2, 3))
    m.train()
    with torch.no_grad():
        out = m(x)
    close(out, F.batch_norm(x, None, None, training=True))
    assert int(m.num_batches_tracked) == 1
    rm = m.running_mean.clone()
    m.eval()
    with torch.enable_grad():
        out = m(x.clone().requires_grad_())
    close(out.detach(), F.batch_norm(x, rm, m.running_var, training=False))
    assert torch.equal(m.running_mean, rm) and int(m.num_batches_tracked) == 1


# ---------------------------------------------------------------- gradcheck

def _leaf(t):
    return t.detach().clone().requires_grad_()


GRAD_CASES = {
    "batch_norm_train": (lambda x, w, b: R.batch_norm(x, *make_running(2), w, b, True, 0.1, 1e-3),
                         (4, 2, 3)),
    "batch_norm_train_4d": (lambda x, w, b: R.batch_norm(x, None, None, w, b, True), (2, 2, 2, 3)),
    "batch_norm_train_2d": (lambda x, w, b: R.batch_norm(x, None, None, w, b, True), (5, 2)),
    "batch_norm_eval": (lambda x, w, b: R.batch_norm(x, *make_running(2), w, b, False), (3, 2, 2)),
    "instance_norm": (lambda x, w, b: R.instance_norm(x, None, None, w, b), (2, 2, 2, 3)),
    "instance_norm_tracked": (lambda x, w, b: R.instance_norm(x, *make_running(2), w, b), (2, 2, 4)),
    "instance_norm_running": (lambda x, w, b: R.instance_norm(
        x, *make_running(2), w, b, use_input_stats=False), (2, 2, 4)),
    "group_norm": (lambda x, w, b: R.group_norm(x, 2, w, b), (2, 4, 3)),
    "group_norm_5d": (lambda x, w, b: R.group_norm(x, 1, w, b, 1e-3), (2, 2, 2, 2, 2)),
    "group_norm_per_channel": (lambda x, w, b: R.group_norm(x, 4, w, b), (2, 4, 3)),
}


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_gradcheck_channel_norms(name):
    fn, shape = GRAD_CASES[name]
    x = _leaf(make_input(shape, "transposed"))
    w, b = (_leaf(t) for t in make_affine((shape[1],), "both"))
    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("shape,k", [((3, 4), 1), ((2, 3, 4), 2), ((2, 2, 2, 3), 3)], ids=str)
def test_gradcheck_layer_norm(shape, k):
    ns = shape[len(shape) - k:]
    x = _leaf(make_input(shape))
    w, b = (_leaf(t) for t in make_affine(ns, "both"))
    assert torch.autograd.gradcheck(lambda x, w, b: R.layer_norm(x, ns, w, b), (x, w, b))


def test_gradcheck_without_affine():
    x = _leaf(make_input((3, 2, 4)))
    assert torch.autograd.gradcheck(lambda x: R.batch_norm(x, None, None, training=True), (x,))
    assert torch.autograd.gradcheck(lambda x: R.group_norm(x, 2), (x,))
    assert torch.autograd.gradcheck(lambda x: R.instance_norm(x), (x,))
    assert torch.autograd.gradcheck(lambda x: R.layer_norm(x, (2, 4)), (x,))


@pytest.mark.parametrize("affine", ["weight", "bias"])
def test_gradcheck_layer_norm_with_weight_or_bias_alone(affine):
    # LayerNorm applies an elementwise affine in its own pass, one op for each case
    x = _leaf(make_input((3, 2, 4)))
    w, b = make_affine((2, 4), affine)
    param = _leaf(w if affine == "weight" else b)
    fn = (lambda x, p: R.layer_norm(x, (2, 4), weight=p)) if affine == "weight" else \
        (lambda x, p: R.layer_norm(x, (2, 4), bias=p))
    assert torch.autograd.gradcheck(fn, (x, param))


# The shared autograd Function, called directly: each branch of its backward (a weight and
# bias per row or per column, either alone, statistics over one dim or several).
FUNCTION_CASES = {
    "per_row_both": ((3, 2, 4), (0, 2), (1, 2, 1), "both"),
    "per_row_weight": ((3, 2, 4), (0, 2), (1, 2, 1), "weight"),
    "per_row_bias": ((2, 3, 4), (2,), (1, 3, 1), "bias"),
    "per_row_none": ((2, 2, 2, 3), (2, 3), (1, 2, 2, 1), "none"),
    "per_sample_and_row": ((2, 2, 2, 3), (2, 3), (2, 2, 2, 1), "both"),
    "per_column": ((3, 5), (1,), (5,), "both"),
}


@pytest.mark.parametrize("name", list(FUNCTION_CASES))
def test_gradcheck_normalize_function(name):
    shape, dims, affine_shape, affine = FUNCTION_CASES[name]
    x = _leaf(make_input(shape))
    w, b = (None if t is None else _leaf(t) for t in make_affine(affine_shape, affine))
    params = [t for t in (w, b) if t is not None]

    def fn(x, *params):
        it = iter(params)
        weight, bias = (next(it) if t is not None else None for t in (w, b))
        return R._Normalize.apply(x, dims, weight, bias, 1e-3)[0]
    assert torch.autograd.gradcheck(fn, (x, *params))


@pytest.mark.parametrize("name", list(FUNCTION_CASES))
def test_normalize_function_matches_plain_formula(name):
    shape, dims, affine_shape, affine = FUNCTION_CASES[name]
    x = make_input(shape)
    w, b = make_affine(affine_shape, affine)
    out, mean, var = R._Normalize.apply(x, dims, w, b, 1e-3)
    m = x.mean(dims, keepdim=True)
    v = ((x - m) ** 2).mean(dims, keepdim=True)
    expected = (x - m) / torch.sqrt(v + 1e-3) * (1 if w is None else w) + (0 if b is None else b)
    close(out, expected, "out")
    close(mean, m, "mean")
    close(var, v, "var")


@pytest.mark.parametrize("fn", [
    lambda x, w, b: R.batch_norm(x, None, None, w, b, training=True),
    lambda x, w, b: R.instance_norm(x, weight=w, bias=b),
    lambda x, w, b: R.group_norm(x, 2, w, b),
    lambda x, w, b: R.layer_norm(x, x.shape[1:], w.view(-1, 1, 1).expand(x.shape[1:]),
                                 b.view(-1, 1, 1).expand(x.shape[1:])),
], ids=["batch_norm", "instance_norm", "group_norm", "layer_norm"])
def test_training_norms_backpropagate_through_one_node(fn):
    # the speed of the backward pass rests on this: the closed form, not autograd's chain
    x = _leaf(make_input((2, 4, 3, 3)))
    w, b = (_leaf(t) for t in make_affine((4,), "both"))
    nodes, todo = set(), [fn(x, w, b).grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in nodes:
            nodes.add(node)
            todo += [next_node for next_node, _ in node.next_functions]
    names = [type(node).__name__ for node in nodes]
    assert names.count("_NormalizeBackward") == 1, names
    assert not {"MeanBackward1", "LinalgVectorNormBackward0", "SubBackward0"} & set(names), names


def test_batch_norm_gradients_match_finite_differences_of_slow_loops():
    # the training-mode batch_norm's gradients (the Function's backward), without torch autograd
    # on the oracle's side
    x, g = make_input((3, 2, 2)), make_input((3, 2, 2), seed=4)
    w, b = make_affine((2,), "both")
    xl, wl, bl = _leaf(x), _leaf(w), _leaf(b)
    got = torch.autograd.grad(R.batch_norm(xl, None, None, wl, bl, True, 0.1, 1e-3), (xl, wl, bl), g)
    num = S.batch_norm_numerical_grad(x, w, b, g, eps=1e-3)
    for name, a, e in zip(["grad_input", "grad_weight", "grad_bias"], got, num):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-7, msg=lambda m: f"{name}: {m}")


def test_normalize_function_refuses_double_backward():
    x = _leaf(make_input((3, 2, 4)))
    out = R._Normalize.apply(x, (0, 2), None, None, 1e-5)[0]
    grad_out = torch.randn_like(out, requires_grad=True)
    (grad,) = torch.autograd.grad(out, x, grad_out, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


# ---------------------------------------------------------------- BatchNorm2d vs nn.BatchNorm2d

BATCHES = [(4, 3, 5, 6), (2, 3, 3, 3), (8, 3, 2, 2), (3, 3, 4, 1), (1, 3, 2, 5)]


def _twins(momentum=0.1, affine=True, track=True, eps=1e-5):
    ours = R.BatchNorm2d(3, eps, momentum, affine, track).double()
    theirs = nn.BatchNorm2d(3, eps, momentum, affine, track).double()
    if affine:
        w, b = make_affine((3,), "both", seed=5)
        with torch.no_grad():
            for m in (ours, theirs):
                m.weight.copy_(w)
                m.bias.copy_(b)
    return ours, theirs


def _assert_same_state(ours, theirs):
    so, st = ours.state_dict(), theirs.state_dict()
    assert list(so) == list(st)
    for k in st:
        assert so[k].dtype == st[k].dtype, k
        if st[k].dtype == torch.long:
            assert torch.equal(so[k], st[k]), k
        else:
            close(so[k], st[k], k)


@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_module_training_steps_then_eval_match_nn(momentum, affine, track):
    ours, theirs = _twins(momentum, affine, track, eps=1e-3)
    for step, shape in enumerate(BATCHES):
        x = make_input(shape, "transposed" if step % 2 else "contiguous", seed=20 + step)
        xo, xt = _leaf(x), _leaf(x)
        yo, yt = ours(xo), theirs(xt)
        close(yo, yt, f"step {step} output")
        g = make_input(shape, seed=40 + step)
        yo.backward(g)
        yt.backward(g)
        close(xo.grad, xt.grad, f"step {step} input grad")
        if affine:
            close(ours.weight.grad, theirs.weight.grad, "weight grad")
            close(ours.bias.grad, theirs.bias.grad, "bias grad")
            with torch.no_grad():  # the same SGD step on both
                for m in (ours, theirs):
                    for p in m.parameters():
                        p -= 0.1 * p.grad
                        p.grad = None
        _assert_same_state(ours, theirs)
    if track:
        assert ours.num_batches_tracked.dtype == torch.long
        assert int(ours.num_batches_tracked) == len(BATCHES)
    ours.eval(), theirs.eval()
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    for seed in (60, 61):
        x = make_input((2, 3, 4, 4), seed=seed)
        close(ours(x), theirs(x), "eval output")
    _assert_same_state(ours, theirs)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed in eval mode"


def test_module_momentum_none_is_cumulative_average():
    ours, theirs = _twins(momentum=None)
    means, vars_u = [[] for _ in range(3)], [[] for _ in range(3)]
    for k, shape in enumerate(BATCHES, start=1):
        x = make_input(shape, seed=70 + k)
        ours(x), theirs(x)
        for c in range(3):
            mean, _, var_u = S.mean_var(x[:, c].reshape(-1).tolist())
            means[c].append(mean)
            vars_u[c].append(var_u)
        # After k batches: the plain average of the k batch means / unbiased variances.
        close(ours.running_mean, torch.tensor([sum(m) / k for m in means], dtype=DT), f"mean k={k}")
        close(ours.running_var, torch.tensor([sum(v) / k for v in vars_u], dtype=DT), f"var k={k}")
        assert int(ours.num_batches_tracked) == k
    _assert_same_state(ours, theirs)


def test_module_affine_false_has_no_parameters():
    ours, theirs = _twins(affine=False)
    assert ours.weight is None and ours.bias is None
    assert list(ours.parameters()) == []
    x = make_input((4, 3, 3, 3))
    close(ours(x), F.batch_norm(x, None, None, training=True))
    close(ours(x), theirs(x))


def test_module_without_running_stats_uses_batch_stats_in_eval():
    ours, theirs = _twins(track=False)
    assert ours.running_mean is None and ours.running_var is None
    assert ours.num_batches_tracked is None
    ours.eval(), theirs.eval()
    x = make_input((4, 3, 3, 2))
    expected, _, _ = S.batch_norm(x, None, None, ours.weight.detach(), ours.bias.detach(),
                                  training=True, eps=1e-5)
    close(ours(x), expected)
    close(ours(x), theirs(x))
    assert list(ours.state_dict()) == ["weight", "bias"]


@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_module_state_dict_keys_params_and_buffers_match_nn(affine, track):
    ours, theirs = R.BatchNorm2d(5, affine=affine, track_running_stats=track), \
        nn.BatchNorm2d(5, affine=affine, track_running_stats=track)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert sum(p.numel() for p in ours.parameters()) == (10 if affine else 0)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    for k, v in theirs.state_dict().items():  # fresh module: same initial values and dtypes
        assert torch.equal(ours.state_dict()[k], v) and ours.state_dict()[k].dtype == v.dtype, k


@pytest.mark.parametrize("direction", ["nn_to_ours", "ours_to_nn"])
def test_module_state_dict_loads_across(direction):
    src = (nn.BatchNorm2d(3, momentum=0.3) if direction == "nn_to_ours"
           else R.BatchNorm2d(3, momentum=0.3)).double()
    dst = (R.BatchNorm2d(3) if direction == "nn_to_ours" else nn.BatchNorm2d(3)).double()
    with torch.no_grad():
        src.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
        src.bias.copy_(torch.tensor([0.1, 0.0, 3.0]))
    for k in range(3):
        src(make_input((4, 3, 3, 3), seed=80 + k))
    result = dst.load_state_dict(src.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    _assert_same_state(dst, src)
    assert int(dst.num_batches_tracked) == 3
    src.eval(), dst.eval()
    x = make_input((2, 3, 4, 4), seed=90)
    close(dst(x), src(x))


def test_module_rejects_bad_input():
    m = R.BatchNorm2d(3)
    with pytest.raises(ValueError, match=r"4-D input.*\(2, 3, 4\)"):
        m(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="expected 3 channels, got 4"):
        m(torch.randn(2, 4, 3, 3))


# ---------------------------------------------------------------- batch_norm_backward

BWD_SHAPES = [(6, 3), (4, 3, 5), (1, 2, 7), (3, 2, 4, 5), (2, 3, 2, 3, 2)]


@pytest.mark.parametrize("eps", [1e-5, 0.1])
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("shape", BWD_SHAPES, ids=str)
def test_batch_norm_backward_matches_autograd(shape, with_weight, eps):
    C = shape[1]
    x = make_input(shape, "transposed")
    g = make_input(shape, seed=3)
    w = make_affine((C,), "weight")[0] if with_weight else None
    b = make_affine((C,), "bias")[1]
    xl = _leaf(x)
    wl = _leaf(w if with_weight else torch.ones(C, dtype=DT))
    bl = _leaf(b)
    y = F.batch_norm(xl, None, None, wl, bl, training=True, eps=eps)
    exp = torch.autograd.grad(y, (xl, wl, bl), g)
    got = R.batch_norm_backward(g, x, w, eps)
    assert len(got) == 3
    for name, a, e in zip(["grad_input", "grad_weight", "grad_bias"], got, exp):
        assert a.shape == e.shape, name
        close(a, e, name)


def test_batch_norm_backward_does_not_use_autograd(monkeypatch):
    x = make_input((4, 3, 2, 3))
    g = make_input((4, 3, 2, 3), seed=9)
    w = make_affine((3,), "weight")[0]
    xl, wl, bl = _leaf(x), _leaf(w), _leaf(torch.zeros(3, dtype=DT))
    exp = torch.autograd.grad(F.batch_norm(xl, None, None, wl, bl, training=True), (xl, wl, bl), g)

    def forbidden(*args, **kwargs):
        raise AssertionError("batch_norm_backward called autograd")

    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    monkeypatch.setattr(torch.autograd, "backward", forbidden)
    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    assert not (x.requires_grad or g.requires_grad or w.requires_grad)
    with torch.no_grad():
        got = R.batch_norm_backward(g, x, w)
    for a, e in zip(got, exp):
        assert not a.requires_grad and a.grad_fn is None
        close(a, e)


def test_batch_norm_backward_matches_finite_differences_of_slow_loops():
    # Independent of torch autograd: central differences of the loop reference.
    x = make_input((3, 2, 2))
    g = make_input((3, 2, 2), seed=4)
    w, b = make_affine((2,), "both")
    num = S.batch_norm_numerical_grad(x, w, b, g, eps=1e-3)
    got = R.batch_norm_backward(g, x, w, 1e-3)
    for name, a, e in zip(["grad_input", "grad_weight", "grad_bias"], got, num):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-7, msg=lambda m: f"{name}: {m}")


def test_batch_norm_backward_weight_none_means_ones():
    x = make_input((4, 3, 5))
    g = make_input((4, 3, 5), seed=6)
    for a, e in zip(R.batch_norm_backward(g, x), R.batch_norm_backward(g, x, torch.ones(3, dtype=DT))):
        close(a, e)


# ---------------------------------------------------------------- errors

def test_group_norm_groups_must_divide_channels():
    with pytest.raises(ValueError, match=r"num_groups=4.*C=6"):
        R.group_norm(torch.randn(2, 6, 3), 4)
    with pytest.raises(ValueError, match=r"num_groups=0.*C=6"):
        R.group_norm(torch.randn(2, 6, 3), 0)


@pytest.mark.parametrize("what", ["running_mean", "running_var"])
def test_wrong_running_stat_shape(what):
    x = torch.randn(4, 3, 5)
    stats = {"running_mean": torch.zeros(3), "running_var": torch.ones(3)}
    stats[what] = torch.zeros(4)
    with pytest.raises(ValueError, match=rf"batch_norm: {what} must have shape \(3,\), got \(4,\)"):
        R.batch_norm(x, stats["running_mean"], stats["running_var"], training=True)
    with pytest.raises(ValueError, match=rf"instance_norm: {what} must have shape \(3,\), got \(4,\)"):
        R.instance_norm(x, stats["running_mean"], stats["running_var"])


def test_only_one_running_stat_given():
    x = torch.randn(4, 3, 5)
    with pytest.raises(ValueError, match="running_mean and running_var must both be given"):
        R.batch_norm(x, torch.zeros(3), None, training=True)
    with pytest.raises(ValueError, match="running_mean and running_var must both be given"):
        R.instance_norm(x, None, torch.ones(3))


@pytest.mark.parametrize("what", ["weight", "bias"])
def test_wrong_affine_shape(what):
    x = torch.randn(4, 6, 5)
    bad = {what: torch.ones(5)}
    with pytest.raises(ValueError, match=rf"batch_norm: {what} must have shape \(6,\), got \(5,\)"):
        R.batch_norm(x, None, None, training=True, **bad)
    with pytest.raises(ValueError, match=rf"instance_norm: {what} must have shape \(6,\)"):
        R.instance_norm(x, **bad)
    with pytest.raises(ValueError, match=rf"group_norm: {what} must have shape \(6,\)"):
        R.group_norm(x, 2, **bad)
    with pytest.raises(ValueError, match=rf"layer_norm: {what} must have shape \(6, 5\), got \(5,\)"):
        R.layer_norm(x, (6, 5), **bad)
    with pytest.raises(ValueError, match=rf"batch_norm_backward: weight must have shape \(6,\)"):
        R.batch_norm_backward(x, x, torch.ones(5))


def test_errors_leave_running_stats_untouched():
    rm, rv = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError):
        R.batch_norm(torch.randn(4, 3, 5), rm, rv, torch.ones(2), training=True)
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))


@pytest.mark.parametrize("fn", [
    lambda x: R.batch_norm(x, None, None, training=True),
    lambda x: R.layer_norm(x, (5,)),
    lambda x: R.instance_norm(x),
    lambda x: R.group_norm(x, 1),
    lambda x: R.batch_norm_backward(x, x),
], ids=["batch_norm", "layer_norm", "instance_norm", "group_norm", "batch_norm_backward"])
def test_integer_input_rejected(fn):
    with pytest.raises(TypeError, match=r"floating-point tensor, got torch.int64"):
        fn(torch.arange(60).view(4, 3, 5))


def test_non_tensor_input_rejected():
    with pytest.raises(TypeError, match="must be a torch.Tensor, got list"):
        R.group_norm([[1.0, 2.0]], 1)


def test_too_few_dims():
    with pytest.raises(ValueError, match=r"batch_norm: input must have at least 2 dimensions.*\(5,\)"):
        R.batch_norm(torch.randn(5), None, None, training=True)
    with pytest.raises(ValueError, match=r"instance_norm: input must have at least 3 dimensions.*\(4, 5\)"):
        R.instance_norm(torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"group_norm: input must have at least 2 dimensions"):
        R.group_norm(torch.randn(6), 2)
    with pytest.raises(ValueError, match=r"layer_norm: input must have at least 1 dimensions"):
        R.layer_norm(torch.tensor(1.0), (1,))


def test_layer_norm_shape_mismatch():
    with pytest.raises(ValueError, match=r"input of shape \(2, 3, 4\) does not end with normalized_shape \(3, 5\)"):
        R.layer_norm(torch.randn(2, 3, 4), (3, 5))
    with pytest.raises(ValueError, match=r"does not end with normalized_shape \(2, 2, 3, 4\)"):
        R.layer_norm(torch.randn(2, 3, 4), (2, 2, 3, 4))
    with pytest.raises(ValueError, match="normalized_shape must have at least one dimension"):
        R.layer_norm(torch.randn(2, 3, 4), ())


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)], ids=str)
def test_batch_norm_training_needs_more_than_one_value_per_channel(shape):
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        R.batch_norm(torch.randn(shape), torch.zeros(3), torch.ones(3), training=True)


def test_instance_norm_needs_more_than_one_spatial_element():
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        R.instance_norm(torch.randn(4, 3, 1, 1))


def test_eval_without_running_stats():
    with pytest.raises(ValueError, match="running_mean and running_var are needed in eval mode"):
        R.batch_norm(torch.randn(4, 3), None, None, training=False)
    with pytest.raises(ValueError, match="needed when use_input_stats=False"):
        R.instance_norm(torch.randn(4, 3, 5), use_input_stats=False)


def test_batch_norm_backward_shape_mismatch():
    with pytest.raises(ValueError, match=r"grad_out shape \(4, 3\) differs from x shape \(4, 3, 2\)"):
        R.batch_norm_backward(torch.randn(4, 3), torch.randn(4, 3, 2))


# ---------------------------------------------------------------- benchmark smoke test

def test_bench_quick_runs_and_prints_a_ratio_per_norm():
    rows, stdout = quick_rows("bench/norms.py")
    names = ["batch_norm", "layer_norm", "instance_norm", "group_norm"]
    for name in names:
        for mode in ["fwd", "fwd+bwd"]:
            assert (name, mode) in rows, f"no {name} {mode} row in:\n{stdout}"
            assert rows[name, mode][3] < 1e-5, f"reference and torch disagree: {name} {mode}"
    # under each forward row, the floor of separate ops and its ratio to that row's built-in
    floors = re.findall(r"^(\w+) +fwd .*\n  floor of separate ops .* ([\d.]+) ms, ([\d.]+) x torch$",
                        stdout, re.M)
    assert [name for name, _, _ in floors] == names, stdout
    for name, ms, ratio in floors:
        assert helpers.printed_ratio(float(ratio), float(ms), rows[name, "fwd"][1]), (name, stdout)


# ---------------------------------------------------------------- the grader's probes

def autograd_batch_norm_backward(grad_out, x, weight=None, eps=1e-5):
    """batch_norm_backward by autograd through F.batch_norm."""
    C = x.shape[1]
    x = x.detach().requires_grad_()
    weight = (x.new_ones(C) if weight is None else weight.detach()).requires_grad_()
    bias = x.new_zeros(C, requires_grad=True)
    out = F.batch_norm(x, None, None, weight, bias, True, 0.0, eps)
    return torch.autograd.grad(out, (x, weight, bias), grad_out)


COUNTERPARTS = dict(batch_norm=F.batch_norm, layer_norm=F.layer_norm,
                    instance_norm=F.instance_norm, group_norm=F.group_norm,
                    BatchNorm2d=nn.BatchNorm2d, batch_norm_backward=autograd_batch_norm_backward)


@pytest.mark.parametrize("probe, seed", probe_cases("norms"))
def test_probe_agrees_with_torch(probe, seed):
    check_probe(probe, seed, R, COUNTERPARTS)


# -- the chapter's page and its classic mistakes --------------------------------

@pytest.mark.xdist_group("book")  # reads the session's one build of the book
def test_page_ran_its_experiments(html):
    page = (html / "book/norms.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 3, "figures drawn by code are missing"
    text = visible_text(page)
    assert "BN test error (%)" in text and "GN test error (%)" in text, "experiment 1 did not print"
    assert "running_var" in text and "eval var" in text, "experiment 2 did not print its table"
    for term in ["批归一化", "层归一化", "实例归一化", "组归一化", "方差偏移"]:
        assert term in page


def test_page_lets_only_batchnorm_with_fixed_statistics_undo_itself():
    text = prose("norms")
    undo = sentences_with(text, r"undo itself")
    assert undo and all("BatchNorm" in s and "population statistics" in s for s in undo), \
        "only BatchNorm with fixed (population) statistics can undo itself (Ioffe and Szegedy, section 3)"
    assert sentences_with(text, r"LayerNorm, InstanceNorm and GroupNorm cannot undo"), \
        "the chapter should say that the per-sample norms cannot undo themselves"
    x = 2 + 3 * torch.randn(6, 4, 5, 5, dtype=torch.float64)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    undone = R.batch_norm(x, mean, var, torch.sqrt(var + 1e-5), mean, training=False, eps=1e-5)
    torch.testing.assert_close(undone, x)
    # two inputs that differ by a per-sample scale and shift give one output: no later map can undo both
    other = x * torch.arange(1, 7, dtype=x.dtype).view(-1, 1, 1, 1) - 5
    for name, norm in [("LayerNorm", lambda t: R.layer_norm(t, t.shape[1:], eps=0)),
                       ("InstanceNorm", lambda t: R.instance_norm(t, eps=0)),
                       ("GroupNorm", lambda t: R.group_norm(t, 2, eps=0))]:
        torch.testing.assert_close(norm(other), norm(x), msg=name)


def test_page_credits_the_re_estimation_remedy_to_hendrycks_and_gimpel():
    entry = bib_entries()["hendrycks2016adjusting"]
    assert entry["author"] == "Hendrycks, Dan and Gimpel, Kevin" and "1607.02488" in entry["journal"]
    remedy = sentences_with(prose("norms"), r"re-estimating BatchNorm's statistics with Dropout")
    assert remedy and all("hendrycks2016adjusting" in s for s in remedy), \
        "re-estimating BN's statistics with Dropout off is Hendrycks and Gimpel's remedy: cite it"


WRONG_AXES_BATCH_NORM = textwrap.dedent('''
    def batch_norm(input, running_mean, running_var, weight=None, bias=None,
                   training=False, momentum=0.1, eps=1e-5):
        shape = (1, -1) + (1,) * (input.dim() - 2)
        if training:
            dims = tuple(range(1, input.dim()))          # (C, H, W): LayerNorm's set
            mean = input.mean(dims, keepdim=True)
            var = input.var(dims, unbiased=False, keepdim=True)
        else:
            mean, var = running_mean.view(shape), running_var.view(shape)
        out = (input - mean) / torch.sqrt(var + eps)
        if weight is not None:
            out = out * weight.view(shape)
        if bias is not None:
            out = out + bias.view(shape)
        return out
''')

# Hard-codes 4-D input: right on (N, C, H, W), wrong on every other rank the hidden
# tests and the probes use; an honest bug, so it must not read as a guard bypass.
FOUR_D_BATCH_NORM_BACKWARD = textwrap.dedent('''
    def batch_norm_backward(grad_out, x, weight=None, eps=1e-5):
        C = x.shape[1]
        m = x.numel() // C
        mean = x.mean((0, 2, 3), keepdim=True)
        inv_std = torch.rsqrt(x.var((0, 2, 3), unbiased=False, keepdim=True) + eps)
        x_hat = (x - mean) * inv_std
        grad_bias = grad_out.sum((0, 2, 3))
        grad_weight = (grad_out * x_hat).sum((0, 2, 3))
        scale = inv_std if weight is None else inv_std * weight.view(1, C, 1, 1)
        grad_input = scale / m * (m * grad_out - grad_bias.view(1, C, 1, 1)
                                  - x_hat * grad_weight.view(1, C, 1, 1))
        return grad_input, grad_weight, grad_bias
''')

# eps added to the standard deviation, not to the variance inside the square root
EPS_OUTSIDE_SQRT_GROUP_NORM = textwrap.dedent('''
    def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
        N, C = input.shape[:2]
        rows = input.reshape(N, num_groups, -1)
        centred = rows - rows.mean(-1, keepdim=True)
        std = centred.pow(2).mean(-1, keepdim=True).sqrt()
        out = (centred / (std + eps)).view(input.shape)
        shape = (1, C) + (1,) * (input.dim() - 2)
        if weight is not None:
            out = out * weight.view(shape)
        if bias is not None:
            out = out + bias.view(shape)
        return out
''')

MISTAKES = [
    Mistake("wrong_axes", {"batch_norm": WRONG_AXES_BATCH_NORM}, {"batch_norm"}, "that is LayerNorm"),
    Mistake("biased_running_var", {"batch_norm": edit("var * n / (n - 1)", "var")}, {"batch_norm"},
            "running_var uses the UNBIASED batch variance"),
    Mistake("four_d_only", {"batch_norm_backward": FOUR_D_BATCH_NORM_BACKWARD}, {"batch_norm_backward"}),
    Mistake("eps_outside_sqrt", {"group_norm": EPS_OUTSIDE_SQRT_GROUP_NORM},
            {"group_norm"}, "you added eps outside the square root"),
    Mistake("calls_builtin",
            {"group_norm": edit("    ### BEGIN SOLUTION\n",
                                "    return F.group_norm(input, num_groups, weight, bias, eps)\n")},
            {"group_norm"}, "group_norm calls torch.nn.functional.group_norm"),
    Mistake("correct_but_warns",
            {"layer_norm": edit("    ### BEGIN SOLUTION\n",
                                "    import sys, warnings\n"
                                "    warnings.warn('a student warning')\n"
                                "    print('debug output', file=sys.stderr)\n")},
            set()),
]
