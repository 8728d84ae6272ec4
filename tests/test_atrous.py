"""Tests of the reference code in solutions/atrous.py.

Oracles: F.conv2d (conv2d claims to be a drop-in replacement) and its autograd
gradients; torch.autograd.gradcheck; the loop convolution, the measured
receptive fields and path counts and the transcribed torchvision ASPP of
autograder/oracles/atrous_loops.py; published receptive fields (VGG-16 212, AlexNet 195);
closed-form parameter counts; and functional recomputations (F.conv2d,
F.batch_norm, a reshape/permute pixel shuffle) from each module's own weights.
"""
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.oracles import atrous_loops as S
from solutions import atrous as A
from tests.helpers import (Mistake, OpRecorder, check_probe, edit, pair, probe_cases, rand, tol,
                           visible_text)


DT = torch.float64
# F.conv2d warns that padding='same' with an even kernel copies the input: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def padded_size(H, W, KH, KW, padding, dilation):
    """Padded H, W as F.conv2d sees them (for deciding whether a config is valid)."""
    dh, dw = pair(dilation)
    if padding == "valid":
        return H, W
    if padding == "same":
        return H + dh * (KH - 1), W + dw * (KW - 1)
    ph, pw = pair(padding)
    return H + 2 * ph, W + 2 * pw


# ================================================================ conv2d

def test_conv2d_signature_matches_functional():
    import inspect
    theirs = F.conv2d.__doc__.strip().splitlines()[0]
    ours = "conv2d" + str(inspect.signature(A.conv2d)).split(" ->")[0]
    strip = lambda s: re.sub(r": [^,=)]+", "", s).replace(" ", "")  # noqa: E731
    assert strip(ours) == strip(theirs.split(" ->")[0]), (ours, theirs)


GEOMS = [  # (N, C_in, C_out, H, W, KH, KW)
    (2, 4, 8, 9, 11, 3, 3),
    (1, 4, 4, 7, 7, 1, 1),
    (3, 4, 8, 8, 10, 2, 3),
    (2, 4, 4, 6, 13, 1, 5),
    (1, 4, 8, 12, 9, 5, 5),
    (2, 4, 8, 5, 5, 4, 2),
    (2, 4, 4, 3, 3, 3, 3),
]
ARGS = [  # (stride, padding, dilation)
    (1, 0, 1), (2, 0, 1), (1, 1, 1), (1, 2, 2), (2, 1, 3), ((1, 2), (0, 1), 1),
    (3, (2, 1), (2, 1)), ((2, 1), 2, (1, 3)), (1, "same", 1), (1, "same", (2, 3)),
    (1, "valid", 2), ([2, 2], [1, 1], [1, 1]),
]
GROUPS = [1, 2, 4]  # 4 == C_in: depthwise (multiplier 1 or 2)


FULL_GRID = [(g, a, grp, bias, torch.float64) for g in GEOMS for a in ARGS for grp in GROUPS
             for bias in (False, True)]
FLOAT32_GRID = [(g, a, grp, True, torch.float32) for g in GEOMS for a in ARGS for grp in (1, 2)]


@pytest.mark.parametrize("geom,args,groups,bias,dtype", FULL_GRID + FLOAT32_GRID, ids=str)
def test_conv2d_matches_functional(geom, args, groups, bias, dtype):
    N, C, O, H, W, KH, KW = geom
    stride, padding, dilation = args
    x = rand(N, C, H, W, seed=1, dtype=dtype)
    w = rand(O, C // groups, KH, KW, seed=2, dtype=dtype)
    b = rand(O, seed=3, dtype=dtype) if bias else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    Hp, Wp = padded_size(H, W, KH, KW, padding, dilation)
    dh, dw = pair(dilation)
    if dh * (KH - 1) + 1 > Hp or dw * (KW - 1) + 1 > Wp:
        with pytest.raises(RuntimeError):
            F.conv2d(x, w, b, **kwargs)
        with pytest.raises(ValueError, match="larger than the padded input"):
            A.conv2d(x, w, b, **kwargs)
        return
    expected = F.conv2d(x, w, b, **kwargs)
    out = A.conv2d(x, w, b, **kwargs)
    assert out.shape == expected.shape and out.dtype == dtype
    torch.testing.assert_close(out, expected, **tol(dtype))


LAYOUTS = ["transposed", "strided", "channels_last", "expanded_weight"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("args", ARGS[::3], ids=str)
@pytest.mark.parametrize("groups", [1, 4])
def test_conv2d_non_contiguous_input(layout, args, groups):
    stride, padding, dilation = args
    x = rand(2, 4, 9, 11, seed=4)
    w = rand(8, 4 // groups, 3, 2, seed=5)
    x_before = x.clone()
    if layout == "transposed":
        x = x.permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0)
    elif layout == "strided":
        base = torch.full((2, 4, 9, 23), float("nan"), dtype=DT)
        base[..., 1::2] = x
        x = base[..., 1::2]
    elif layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    else:  # weight a view with a zero stride, bias a strided slice
        w = w[:1].expand(8, -1, -1, -1)
    assert torch.equal(x, x_before)
    b = rand(16, seed=6)[::2]
    assert not b.is_contiguous()
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    torch.testing.assert_close(A.conv2d(x, w, b, **kwargs), F.conv2d(x, w, b, **kwargs),
                               rtol=1e-10, atol=1e-10)
    assert torch.equal(x, x_before), "input was modified"


NAIVE_CASES = [  # (N, C_in, C_out, H, W, KH, KW, stride, padding, dilation, groups, bias)
    (2, 3, 2, 5, 6, 3, 3, 1, 0, 1, 1, True),
    (1, 4, 4, 7, 6, 3, 2, 2, 1, 2, 2, False),
    (2, 4, 4, 6, 6, 3, 3, 1, "same", 2, 4, True),
    (1, 2, 6, 8, 7, 2, 3, (2, 1), (1, 0), (3, 1), 2, True),
    (1, 3, 3, 4, 5, 1, 1, 1, 1, 1, 3, False),
    (2, 2, 4, 5, 5, 2, 2, 1, "same", 1, 1, False),  # even kernel: extra zero after
    (1, 1, 1, 3, 3, 3, 3, 1, "valid", 1, 1, True),  # one output pixel
]


@pytest.mark.parametrize("case", NAIVE_CASES, ids=str)
def test_conv2d_matches_loop_definition(case):
    N, C, O, H, W, KH, KW, stride, padding, dilation, groups, bias = case
    x, w = rand(N, C, H, W, seed=7), rand(O, C // groups, KH, KW, seed=8)
    b = rand(O, seed=9) if bias else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    expected = S.naive_conv2d(x, w, b, **kwargs)
    torch.testing.assert_close(A.conv2d(x, w, b, **kwargs), expected, rtol=1e-10, atol=1e-10)


def test_conv2d_analytic_cases():
    x = torch.arange(16, dtype=DT).view(1, 1, 4, 4)
    ones = torch.ones(1, 1, 2, 2, dtype=DT)
    # 2x2 box sums, stride 2: blocks {0,1,4,5}, {2,3,6,7}, {8,9,12,13}, {10,11,14,15}
    assert torch.equal(A.conv2d(x, ones, stride=2), torch.tensor([[[[10., 18.], [42., 50.]]]], dtype=DT))
    # dilation 3 on 4x4: the four corners 0 + 3 + 12 + 15
    assert torch.equal(A.conv2d(x, ones, dilation=3), torch.tensor([[[[30.]]]], dtype=DT))
    # a single tap at (1, 1) of a 3x3 kernel, padding 1: the identity (cross-correlation, not flipped)
    delta = torch.zeros(1, 1, 3, 3, dtype=DT)
    delta[0, 0, 1, 1] = 1
    assert torch.equal(A.conv2d(x, delta, padding=1), x)
    # tap at (0, 0) reads the pixel up-left of the centre: a shift down-right
    corner = torch.zeros(1, 1, 3, 3, dtype=DT)
    corner[0, 0, 0, 0] = 1
    shifted = torch.zeros_like(x)
    shifted[..., 1:, 1:] = x[..., :-1, :-1]
    assert torch.equal(A.conv2d(x, corner, padding=1), shifted)
    # groups: two channels, each filtered by its own scalar; bias added per output channel
    x2 = torch.stack([x[0, 0], -x[0, 0]]).unsqueeze(0)
    w2 = torch.tensor([2.0, 3.0], dtype=DT).view(2, 1, 1, 1)
    out = A.conv2d(x2, w2, torch.tensor([1.0, 0.5], dtype=DT), groups=2)
    assert torch.equal(out, torch.stack([2 * x[0, 0] + 1, -3 * x[0, 0] + 0.5]).unsqueeze(0))


def test_conv2d_empty_batch():
    x, w = rand(0, 4, 6, 6), rand(8, 2, 3, 3)
    out = A.conv2d(x, w, stride=2, padding=1, groups=2)
    assert out.shape == F.conv2d(x, w, stride=2, padding=1, groups=2).shape == (0, 8, 3, 3)


def kernel_fits(geom, args) -> bool:
    """The dilated kernel fits in the padded input (a larger one is tested in the forward grid)."""
    _, _, _, H, W, KH, KW = geom
    _, padding, dilation = args
    Hp, Wp = padded_size(H, W, KH, KW, padding, dilation)
    dh, dw = pair(dilation)
    return dh * (KH - 1) + 1 <= Hp and dw * (KW - 1) + 1 <= Wp


GRAD_CASES = [(g, a, grp) for g in GEOMS[:6] for a in ARGS[1::2] for grp in (1, 4) if kernel_fits(g, a)]


@pytest.mark.parametrize("geom,args,groups", GRAD_CASES, ids=str)
def test_conv2d_gradients_match_functional(geom, args, groups):
    N, C, O, H, W, KH, KW = geom
    stride, padding, dilation = args
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    leaves = [rand(N, C, H, W, seed=10), rand(O, C // groups, KH, KW, seed=11), rand(O, seed=12)]
    ours = [t.clone().requires_grad_() for t in leaves]
    theirs = [t.clone().requires_grad_() for t in leaves]
    g = rand(*F.conv2d(*leaves, **kwargs).shape, seed=13)
    got = torch.autograd.grad(A.conv2d(*ours, **kwargs), ours, g)
    exp = torch.autograd.grad(F.conv2d(*theirs, **kwargs), theirs, g)
    for name, a, e in zip(["input", "weight", "bias"], got, exp):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("kwargs", [
    dict(stride=1, padding=1, dilation=1, groups=1),
    dict(stride=2, padding=(2, 1), dilation=(2, 1), groups=2),
    dict(stride=1, padding="same", dilation=2, groups=4),
], ids=str)
def test_conv2d_gradcheck(kwargs):
    C, O = 4, 4
    x = rand(1, C, 6, 5, seed=14).requires_grad_()
    w = rand(O, C // kwargs["groups"], 3, 2, seed=15).requires_grad_()
    b = rand(O, seed=16).requires_grad_()
    assert torch.autograd.gradcheck(lambda *t: A.conv2d(*t, **kwargs), (x, w, b))


def test_conv2d_does_not_call_a_convolution(monkeypatch):
    x = rand(2, 4, 7, 7).requires_grad_()
    w = rand(4, 2, 3, 3).requires_grad_()
    expected = F.conv2d(x, w, padding="same", dilation=2, groups=2)

    def forbidden(*args, **kwargs):
        raise AssertionError("conv2d called a built-in convolution")

    for module, name in [(F, "conv2d"), (torch, "conv2d"), (torch, "convolution"),
                         (torch, "_convolution"), (F, "conv_transpose2d")]:
        monkeypatch.setattr(module, name, forbidden)
    recorder = OpRecorder()
    with recorder:
        out = A.conv2d(x, w, padding="same", dilation=2, groups=2)
        out.backward(torch.ones_like(out))
    conv_ops = [op for op in recorder.ops if "conv" in op]
    assert not conv_ops, f"conv2d dispatched {conv_ops}"
    torch.testing.assert_close(out.detach(), expected.detach(), rtol=1e-10, atol=1e-10)


def test_conv2d_op_count_does_not_grow_with_kernel_batch_or_image():
    # A loop over kernel taps, pixels, batch or groups would dispatch more ops
    # for the larger cases (49 taps, 8 samples, 8 groups).
    def count(N, H, K, groups):
        x, w, b = rand(N, 8, H, H), rand(8, 8 // groups, K, K), rand(8)
        recorder = OpRecorder()
        with recorder:
            A.conv2d(x, w, b, padding=1, groups=groups)
        return len(recorder.ops)

    counts = [count(N, H, K, g) for N, H, K, g in
              [(1, 3, 1, 1), (8, 20, 7, 1), (1, 5, 3, 2), (8, 16, 7, 8), (2, 9, 5, 4)]]
    assert max(counts) - min(counts) <= 3 and max(counts) < 30, counts


# ---------------------------------------------------------------- conv2d errors

def test_conv2d_rejects_wrong_dims():
    with pytest.raises(ValueError, match=r"input must have shape \(N, C_in, H, W\), got \(4, 5, 5\)"):
        A.conv2d(torch.randn(4, 5, 5), torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"weight must have shape .*got \(2, 4, 3\)"):
        A.conv2d(torch.randn(1, 4, 5, 5), torch.randn(2, 4, 3))


def test_conv2d_rejects_channel_mismatch():
    with pytest.raises(ValueError, match=r"expects 3 input channels .*input has 4"):
        A.conv2d(torch.randn(1, 4, 5, 5), torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"expects 8 input channels \(C_in/groups=4, groups=2\)"):
        A.conv2d(torch.randn(1, 4, 5, 5), torch.randn(2, 4, 3, 3), groups=2)


@pytest.mark.parametrize("groups,C_out", [(3, 6), (2, 3), (0, 4), (-2, 4), (2.0, 4), (True, 4)])
def test_conv2d_groups_must_divide_channels(groups, C_out):
    with pytest.raises(ValueError, match=rf"groups={re.escape(repr(groups))} must be a positive "
                                         rf"int dividing both C_in=4 and C_out={C_out}"):
        A.conv2d(torch.randn(1, 4, 5, 5), torch.randn(C_out, 1, 3, 3), groups=groups)


@pytest.mark.parametrize("what", ["stride", "dilation"])
@pytest.mark.parametrize("value", [0, -1, (1, 0), (1, 2, 3), 1.5, "2", True])
def test_conv2d_stride_and_dilation_must_be_positive(what, value):
    with pytest.raises(ValueError, match=rf"{what} must be a positive int or a pair"):
        A.conv2d(torch.randn(1, 2, 9, 9), torch.randn(2, 2, 3, 3), **{what: value})


@pytest.mark.parametrize("value", [-1, (0, -2), (1,), 0.5])
def test_conv2d_padding_must_be_non_negative(value):
    with pytest.raises(ValueError, match="padding must be a non-negative int or a pair"):
        A.conv2d(torch.randn(1, 2, 9, 9), torch.randn(2, 2, 3, 3), padding=value)


def test_conv2d_padding_strings():
    with pytest.raises(ValueError, match="padding string must be 'valid' or 'same', got 'full'"):
        A.conv2d(torch.randn(1, 2, 9, 9), torch.randn(2, 2, 3, 3), padding="full")
    with pytest.raises(ValueError, match=r"padding='same' is not supported for strided"):
        A.conv2d(torch.randn(1, 2, 9, 9), torch.randn(2, 2, 3, 3), stride=(1, 2), padding="same")
    with pytest.raises(RuntimeError, match="not supported for strided"):  # as F.conv2d
        F.conv2d(torch.randn(1, 2, 9, 9), torch.randn(2, 2, 3, 3), stride=(1, 2), padding="same")


def test_conv2d_rejects_non_float_and_mixed_dtypes():
    with pytest.raises(TypeError, match="floating-point tensor, got torch.int64"):
        A.conv2d(torch.ones(1, 1, 3, 3, dtype=torch.long), torch.ones(1, 1, 1, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="weight dtype torch.float32 differs from input dtype torch.float64"):
        A.conv2d(torch.ones(1, 1, 3, 3, dtype=DT), torch.ones(1, 1, 1, 1))
    with pytest.raises(TypeError, match="must be torch.Tensors"):
        A.conv2d([[1.0]], torch.ones(1, 1, 1, 1))


def test_conv2d_rejects_bad_bias():
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\), got \(3,\)"):
        A.conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3), torch.randn(3))


@pytest.mark.parametrize("H,W,k,padding,dilation", [
    (2, 5, 3, 0, 1), (5, 5, 3, 0, 3), (4, 4, 7, 1, 1), (6, 9, 3, (0, 1), (4, 1)),
])
def test_conv2d_kernel_larger_than_padded_input(H, W, k, padding, dilation):
    x, w = torch.randn(1, 1, H, W), torch.randn(1, 1, k, k)
    with pytest.raises(RuntimeError):
        F.conv2d(x, w, padding=padding, dilation=dilation)
    with pytest.raises(ValueError, match=r"the kernel spans \d+x\d+ pixels .*larger than the padded input"):
        A.conv2d(x, w, padding=padding, dilation=dilation)


# ================================================================ receptive_field

@pytest.mark.parametrize("layers,expected", [
    ([], 1),
    ([(1, 1, 1)], 1),
    ([(3, 1, 1)], 3),
    ([(3, 1, 1)] * 3, 7),                      # three 3x3 convs see as far as one 7x7
    ([(3, 1, 1), (3, 1, 2), (3, 1, 4)], 15),   # exponential growth with doubling rates
    ([(3, 1, 1), (3, 1, 2), (3, 1, 4), (3, 1, 8)], 31),
    ([(3, 1, 2)] * 3, 13),
    ([(3, 1, 1), (3, 1, 2), (3, 1, 5)], 17),
    ([(2, 2, 1), (3, 1, 1)], 6),               # 2x2 pool then 3x3 conv: 2 + 2*2
    ([(7, 2, 1), (3, 2, 1)], 11),              # ResNet stem: 7x7/2 conv, 3x3/2 max pool
    ([(3, 1, 1), (3, 1, 1), (2, 2, 1)] * 2, 16),
])
def test_receptive_field_hand_computed(layers, expected):
    assert A.receptive_field(layers) == expected
    assert isinstance(A.receptive_field(layers), int)


def _vgg16():
    stack = []
    for convs in [2, 2, 3, 3, 3]:
        stack += [(3, 1, 1)] * convs + [(2, 2, 1)]
    return stack


def _alexnet():
    return [(11, 4, 1), (3, 2, 1), (5, 1, 1), (3, 2, 1), (3, 1, 1), (3, 1, 1), (3, 1, 1), (3, 2, 1)]


def test_receptive_field_published_networks():
    # Araujo, Norris & Sim, 2019, "Computing Receptive Fields of Convolutional Neural Networks"
    assert A.receptive_field(_vgg16()) == 212
    assert A.receptive_field(_vgg16()[:-1]) == 196  # conv5_3
    assert A.receptive_field(_alexnet()) == 195


def _random_stacks(count, seed):
    g = torch.Generator().manual_seed(seed)
    draw = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    return [[(draw(1, 5), draw(1, 3), draw(1, 3)) for _ in range(draw(1, 4))] for _ in range(count)]


@pytest.mark.parametrize("layers", _random_stacks(25, seed=0) + [_alexnet(), [(3, 1, 1), (3, 1, 2), (3, 1, 4)]],
                         ids=str)
def test_receptive_field_matches_measured_gradient_extent(layers):
    rows, cols, first_row, first_col = S.brute_receptive_field(layers)
    assert rows == cols == A.receptive_field(layers)
    assert first_row == first_col == 0


@pytest.mark.parametrize("bad", [[(3, 1)], [(3, 1, 0)], [(3, 0, 1)], [(0, 1, 1)], [(3.0, 1, 1)], [3],
                                 [(3, 1, 1), (3, 1, -2)], [(True, 1, 1)]], ids=str)
def test_receptive_field_rejects_bad_layers(bad):
    with pytest.raises(ValueError, match=r"each layer must be a \(kernel, stride, dilation\) tuple of positive ints"):
        A.receptive_field(bad)


# ================================================================ coverage

COVERAGE_CASES = [((2, 2, 2), 3), ((1, 2, 5), 3), ((1, 2, 3), 3), ((1, 2, 4), 3), ((2, 4, 8), 3),
                  ((1, 5), 3), ((3,), 3), ((1,), 3), ((), 3), ((1, 2, 5, 9), 3), ((2, 3), 2),
                  ((1, 1), 5), ((2, 3), 1), ((1, 2), 4)]


@pytest.mark.parametrize("dilations,kernel", COVERAGE_CASES, ids=str)
def test_coverage_equals_paths_through_real_dilated_convs(dilations, kernel):
    got = A.coverage(dilations, kernel)
    R = A.receptive_field([(kernel, 1, d) for d in dilations])
    assert got.dtype == torch.int64 and got.shape == (R, R)
    assert torch.equal(got, S.brute_coverage(dilations, kernel))
    assert int(got.sum()) == kernel ** (2 * len(dilations))
    assert torch.equal(got, got.T) and torch.equal(got, got.flip(0, 1))


@pytest.mark.parametrize("dilations,kernel", [((2, 2, 2), 3), ((1, 2, 5), 3), ((1, 3), 2), ((2,), 4)], ids=str)
def test_coverage_equals_enumerated_tap_choices(dilations, kernel):
    counts = S.enumerate_coverage(dilations, kernel)
    got = A.coverage(dilations, kernel)
    nonzero = {(int(i), int(j)): int(got[i, j]) for i, j in got.nonzero().tolist()}
    assert nonzero == dict(counts)


def test_coverage_gridding_equal_rates_leave_holes():
    cov = A.coverage((2, 2, 2))
    assert cov.shape == (13, 13)
    idx = torch.arange(13)
    even = (idx[:, None] % 2 == 0) & (idx[None, :] % 2 == 0)
    assert torch.equal(cov > 0, even)            # only one pixel in four is ever read
    assert int((cov == 0).sum()) == 13 * 13 - 7 * 7
    assert int(cov[6, 6]) == 49 and int(cov[0, 0]) == 1  # 7 ways per axis at the centre
    assert bool((A.coverage((2, 4, 8)) == 0).any())


@pytest.mark.parametrize("dilations", [(1, 2, 5), (1, 2, 3), (1, 2, 5, 9), (1, 1, 1), (1, 2, 4)], ids=str)
def test_coverage_hybrid_rates_cover_the_whole_square(dilations):
    cov = A.coverage(dilations)
    assert int(cov.min()) >= 1
    assert cov.shape[0] == 1 + 2 * sum(dilations)


def test_coverage_single_layer_is_the_sparse_kernel():
    expected = torch.zeros(7, 7, dtype=torch.int64)
    expected[::3, ::3] = 1
    assert torch.equal(A.coverage([3]), expected)
    assert torch.equal(A.coverage([]), torch.ones(1, 1, dtype=torch.int64))
    assert torch.equal(A.coverage([1, 1]), torch.tensor([1, 2, 3, 2, 1])[:, None] * torch.tensor([1, 2, 3, 2, 1]))


@pytest.mark.parametrize("kwargs,match", [
    (dict(dilations=[1, 0]), "dilations must be positive ints"),
    (dict(dilations=[1, 2.0]), "dilations must be positive ints"),
    (dict(dilations=[1], kernel=0), "kernel must be a positive int, got 0"),
    (dict(dilations=[1], kernel=3.0), "kernel must be a positive int"),
])
def test_coverage_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        A.coverage(**kwargs)


# ================================================================ DepthwiseSeparableConv2d

def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_depthwise_separable_worked_example_39_parameters():
    m = A.DepthwiseSeparableConv2d(3, 4, 3)
    assert n_params(m) == 3 * 3 * 3 + 3 * 4 == 39
    assert n_params(nn.Conv2d(3, 4, 3, bias=False)) == 108
    assert list(m.state_dict()) == ["depthwise.weight", "pointwise.weight"]
    assert m.depthwise.groups == 3 and m.depthwise.weight.shape == (3, 1, 3, 3)
    assert m.pointwise.weight.shape == (4, 3, 1, 1)


@pytest.mark.parametrize("C_in,C_out,k", [(1, 1, 1), (8, 16, 3), (32, 64, 5), (5, 3, (3, 5))], ids=str)
@pytest.mark.parametrize("bias", [False, True])
def test_depthwise_separable_parameter_formula(C_in, C_out, k, bias):
    kh, kw = pair(k)
    m = A.DepthwiseSeparableConv2d(C_in, C_out, k, bias=bias)
    expected = kh * kw * C_in + C_in * C_out + ((C_in + C_out) if bias else 0)
    assert n_params(m) == expected


SEP_ARGS = [dict(), dict(stride=2), dict(padding=1), dict(padding=2, dilation=2),
            dict(stride=(2, 1), padding=(3, 1), dilation=(3, 1)), dict(padding="same", dilation=2)]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("kwargs", SEP_ARGS, ids=str)
def test_depthwise_separable_output_is_depthwise_then_pointwise(kwargs, bias):
    torch.manual_seed(0)
    m = A.DepthwiseSeparableConv2d(4, 6, 3, bias=bias, **kwargs).double()
    x = rand(2, 4, 11, 10, seed=20)
    dw_bias = m.depthwise.bias if bias else None
    pw_bias = m.pointwise.bias if bias else None
    mid = F.conv2d(x, m.depthwise.weight, dw_bias, groups=4, **kwargs)
    expected = F.conv2d(mid, m.pointwise.weight, pw_bias)
    out = m(x)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert out.shape == nn.Conv2d(4, 6, 3, **kwargs).double()(x).shape


def test_depthwise_separable_rejects_bad_arguments():
    with pytest.raises(ValueError, match="in_channels must be a positive int, got 0"):
        A.DepthwiseSeparableConv2d(0, 4, 3)
    with pytest.raises(ValueError, match="out_channels must be a positive int"):
        A.DepthwiseSeparableConv2d(3, 2.5, 3)
    m = A.DepthwiseSeparableConv2d(3, 4, 3)
    with pytest.raises(ValueError, match="input has 2 channels, expected 3"):
        m(torch.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\), got \(3, 5, 5\)"):
        m(torch.randn(3, 5, 5))


# ================================================================ ASPP

def aspp_closed_form(C_in, R, C_out):
    convs = C_in * C_out + R * 9 * C_in * C_out + C_in * C_out   # 1x1, atrous 3x3s, pooling 1x1
    project = (R + 2) * C_out * C_out
    bns = (R + 3) * 2 * C_out                                     # R + 2 branches + project
    return convs + project + bns


def test_aspp_deeplabv3_parameter_count():
    with torch.device("meta"):
        m = A.ASPP(2048, [12, 24, 36], 256)
    assert n_params(m) == 15_535_104
    assert aspp_closed_form(2048, 3, 256) == 15_535_104


@pytest.mark.parametrize("C_in,rates,C_out", [(2048, [6, 12, 18], 256), (960, [12, 24, 36], 256),
                                              (64, [1, 2], 32), (8, [], 4), (3, [1, 2, 3, 4], 5)], ids=str)
def test_aspp_parameter_closed_form(C_in, rates, C_out):
    with torch.device("meta"):
        m = A.ASPP(C_in, rates, C_out)
    assert n_params(m) == aspp_closed_form(C_in, len(rates), C_out)
    assert len(m.convs) == len(rates) + 2


def test_aspp_default_out_channels_is_256():
    with torch.device("meta"):
        m = A.ASPP(16, (1, 2))
    assert m.project[0].weight.shape == (256, 4 * 256, 1, 1)


def test_aspp_state_dict_matches_torchvision_layout():
    with torch.device("meta"):
        ours, theirs = A.ASPP(2048, [12, 24, 36], 256), S.TorchvisionASPP(2048, [12, 24, 36], 256)
    sd_ours, sd_theirs = ours.state_dict(), theirs.state_dict()
    assert list(sd_ours) == list(sd_theirs)
    assert [tuple(v.shape) for v in sd_ours.values()] == [tuple(v.shape) for v in sd_theirs.values()]
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = []
    for i in range(4):
        expected += [f"convs.{i}.0.weight"] + [f"convs.{i}.1.{k}" for k in bn]
    expected += ["convs.4.1.weight"] + [f"convs.4.2.{k}" for k in bn]
    expected += ["project.0.weight"] + [f"project.1.{k}" for k in bn]
    assert list(sd_ours) == expected
    assert sd_ours["convs.2.0.weight"].shape == (256, 2048, 3, 3)
    assert (ours.convs[1][0].dilation, ours.convs[2][0].padding, ours.convs[3][0].dilation) == \
           ((12, 12), (24, 24), (36, 36))
    assert ours.convs[1][0].bias is None and ours.project[0].bias is None
    assert isinstance(ours.project[3], nn.Dropout) and ours.project[3].p == 0.5
    assert isinstance(ours.convs[4][0], nn.AdaptiveAvgPool2d) and ours.convs[4][0].output_size == 1


def _randomise_bn(module, seed):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return module


def _bn(x, bn, training=False):
    return F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias,
                        training, 0.1, bn.eps)


def aspp_functional(m, x, rates):
    """ASPP in eval mode recomputed with F.conv2d / F.batch_norm from m's weights."""
    H, W = x.shape[-2:]
    outs = [F.relu(_bn(F.conv2d(x, m.convs[0][0].weight), m.convs[0][1]))]
    for i, r in enumerate(rates, start=1):
        conv, bn = m.convs[i][0], m.convs[i][1]
        outs.append(F.relu(_bn(F.conv2d(x, conv.weight, padding=r, dilation=r), bn)))
    pool = m.convs[len(rates) + 1]
    pooled = F.relu(_bn(F.conv2d(x.mean((2, 3), keepdim=True), pool[1].weight), pool[2]))
    outs.append(pooled.expand(-1, -1, H, W))  # bilinear from 1x1 is a constant map
    cat = torch.cat(outs, 1)
    return F.relu(_bn(F.conv2d(cat, m.project[0].weight), m.project[1]))


@pytest.mark.parametrize("HW", [(7, 9), (1, 1), (5, 5), (2, 13)], ids=str)
@pytest.mark.parametrize("rates", [(1, 2, 3), (6, 12), ()], ids=str)
def test_aspp_eval_matches_functional_recomputation(rates, HW):
    torch.manual_seed(1)
    m = _randomise_bn(A.ASPP(6, rates, 5), seed=2).double().eval()
    x = rand(2, 6, *HW, seed=21)
    out = m(x)
    assert out.shape == (2, 5, *HW)
    torch.testing.assert_close(out, aspp_functional(m, x, rates), rtol=1e-10, atol=1e-10)
    assert torch.equal(m(x), out)  # eval: dropout off, deterministic


@pytest.mark.parametrize("HW", [(8, 8), (17, 11), (3, 4)], ids=str)
def test_aspp_default_head_output_shape(HW):
    torch.manual_seed(0)
    m = A.ASPP(32, [12, 24, 36]).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 32, *HW)).shape == (1, 256, *HW)


@pytest.mark.parametrize("direction", ["torchvision_to_ours", "ours_to_torchvision"])
def test_aspp_loads_torchvision_state_and_agrees_in_train_and_eval(direction):
    torch.manual_seed(3)
    src = A.ASPP(5, [1, 3], 6) if direction == "ours_to_torchvision" else S.TorchvisionASPP(5, [1, 3], 6)
    dst = S.TorchvisionASPP(5, [1, 3], 6) if direction == "ours_to_torchvision" else A.ASPP(5, [1, 3], 6)
    _randomise_bn(src, seed=4)
    result = dst.load_state_dict(src.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    src.double(), dst.double()
    x = rand(3, 5, 6, 7, seed=22)
    for training in (True, False):
        src.train(training), dst.train(training)
        torch.manual_seed(5)
        a = src(x)
        torch.manual_seed(5)
        b = dst(x)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for k, v in src.state_dict().items():  # the training pass updated both alike
        torch.testing.assert_close(dst.state_dict()[k], v, rtol=1e-10, atol=1e-10)


def test_aspp_training_mode_uses_dropout_and_batch_statistics():
    torch.manual_seed(6)
    m = A.ASPP(4, [2], 8).double().train()
    x = rand(4, 4, 5, 5, seed=23)
    torch.manual_seed(7)
    a = m(x)
    torch.manual_seed(8)
    b = m(x)
    assert not torch.equal(a, b)
    assert (a == 0).float().mean() > 0.4  # half the units dropped, plus ReLU zeros
    assert int(m.project[1].num_batches_tracked) == 2


def test_aspp_pooling_branch_is_constant_over_the_image():
    torch.manual_seed(9)
    pool = _randomise_bn(A.ASPPPooling(3, 4), seed=10).double().eval()
    x = rand(2, 3, 5, 7, seed=24)
    out = pool(x)
    assert out.shape == (2, 4, 5, 7)
    expected = F.relu(_bn(F.conv2d(x.mean((2, 3), keepdim=True), pool[1].weight), pool[2]))
    torch.testing.assert_close(out, expected.expand(-1, -1, 5, 7), rtol=1e-12, atol=1e-12)


def test_aspp_batch_of_one_needs_eval_mode():
    torch.manual_seed(0)
    m = A.ASPP(3, [1], 4)
    with pytest.raises(ValueError, match=r"training mode needs a batch of more than 1 sample.*N=1"):
        m(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError):  # torchvision's fails as well, inside BatchNorm
        S.TorchvisionASPP(3, [1], 4)(torch.randn(1, 3, 5, 5))
    m.eval()
    assert m(torch.randn(1, 3, 5, 5)).shape == (1, 4, 5, 5)


def test_aspp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="in_channels must be a positive int, got 0"):
        A.ASPP(0, [1])
    with pytest.raises(ValueError, match="out_channels must be a positive int, got -1"):
        A.ASPP(4, [1], -1)
    with pytest.raises(ValueError, match=r"atrous_rates must be positive ints, got \[6, 0\]"):
        A.ASPP(4, [6, 0])
    with pytest.raises(ValueError, match="atrous_rates must be positive ints"):
        A.ASPP(4, [6, 1.5])
    m = A.ASPP(4, [1], 2).eval()
    with pytest.raises(ValueError, match="ASPP: input has 3 channels, expected 4"):
        m(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"ASPP: input must be a tensor of shape \(N, 4, H, W\)"):
        m(torch.randn(4, 5, 5))


# ================================================================ DUC

def pixel_shuffle_by_hand(x, r):
    """(N, C*r*r, H, W) -> (N, C, H*r, W*r): channel c*r*r + i*r + j -> pixel (h*r+i, w*r+j)."""
    N, Crr, H, W = x.shape
    C = Crr // (r * r)
    return x.reshape(N, C, r, r, H, W).permute(0, 1, 4, 2, 5, 3).reshape(N, C, H * r, W * r)


def test_pixel_shuffle_by_hand_is_right():
    # independent of nn.PixelShuffle: one channel per output offset, r = 2
    x = torch.arange(4.0).view(1, 4, 1, 1)
    assert torch.equal(pixel_shuffle_by_hand(x, 2), torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]))


@pytest.mark.parametrize("C_in,K,r,HW", [(6, 3, 2, (4, 5)), (4, 1, 4, (3, 3)), (3, 2, 1, (5, 2)),
                                         (5, 4, 3, (1, 1))], ids=str)
def test_duc_is_a_conv_then_pixel_shuffle(C_in, K, r, HW):
    torch.manual_seed(11)
    m = A.DUC(C_in, K, r).double()
    x = rand(2, C_in, *HW, seed=25)
    out = m(x)
    assert out.shape == (2, K, HW[0] * r, HW[1] * r)
    expected = pixel_shuffle_by_hand(F.conv2d(x, m.conv.weight, m.conv.bias, padding=1), r)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("C_in,K,r", [(2048, 19, 8), (16, 21, 4), (1, 1, 1)], ids=str)
def test_duc_parameter_count_and_layout(C_in, K, r):
    with torch.device("meta"):
        m = A.DUC(C_in, K, r)
    assert n_params(m) == 9 * C_in * r * r * K + r * r * K
    assert m.conv.weight.shape == (r * r * K, C_in, 3, 3) and m.conv.bias.shape == (r * r * K,)
    assert m.conv.padding == (1, 1) and m.pixel_shuffle.upscale_factor == r
    assert list(m.state_dict()) == ["conv.weight", "conv.bias"]


def test_duc_rejects_bad_arguments():
    for kwargs, what in [((0, 3, 2), "in_channels"), ((4, 0, 2), "num_classes"), ((4, 3, 0), "upscale"),
                         ((4, 3, 2.0), "upscale")]:
        with pytest.raises(ValueError, match=f"DUC: {what} must be a positive int"):
            A.DUC(*kwargs)
    with pytest.raises(ValueError, match="DUC: input has 5 channels, expected 4"):
        A.DUC(4, 3, 2)(torch.randn(2, 5, 3, 3))


# ================================================================ the grader's probes

class ComposedSeparableConv2d(nn.Module):
    """DepthwiseSeparableConv2d's parameters, applied as the one full convolution they
    factor: weight[o, c] = pointwise[o, c] * depthwise[c]."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=False):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, groups=in_channels,
                                   bias=bias)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.conv = dict(stride=stride, padding=padding, dilation=dilation)

    def forward(self, x):
        mix = self.pointwise.weight[:, :, 0, 0]
        weight = mix[:, :, None, None] * self.depthwise.weight[:, 0][None]
        bias = None if self.pointwise.bias is None else mix @ self.depthwise.bias + self.pointwise.bias
        return F.conv2d(x, weight, bias, **self.conv)


class ReshapeDUC(nn.Module):
    """DUC with the pixel shuffle written as its definition: channel c*r*r + i*r + j of
    pixel (h, w) goes to channel c of pixel (h*r + i, w*r + j)."""

    def __init__(self, in_channels, num_classes, upscale):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, upscale * upscale * num_classes, 3, padding=1)
        self.upscale = upscale

    def forward(self, x):
        y, r = self.conv(x), self.upscale
        N, _, H, W = y.shape
        return y.view(N, -1, r, r, H, W).permute(0, 1, 4, 2, 5, 3).reshape(N, -1, H * r, W * r)


COUNTERPARTS = dict(
    conv2d=F.conv2d, receptive_field=S.brute_receptive_field_1d,
    coverage=lambda dilations, kernel=3: S.brute_coverage(list(dilations), kernel),
    DepthwiseSeparableConv2d=ComposedSeparableConv2d, ASPP=S.TorchvisionASPP, DUC=ReshapeDUC)


@pytest.mark.parametrize("probe, seed", probe_cases("atrous"))
def test_probe_agrees_with_independent_ops(probe, seed):
    check_probe(probe, seed, A, COUNTERPARTS)


# -- the chapter's page and its classic mistakes --------------------------------

@pytest.mark.xdist_group("book")  # reads the session's one build of the book
def test_page_ran_its_experiments(html):
    page = (html / "book/atrous.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 4, "figures drawn by code are missing"
    text = visible_text(page)
    assert "15,535,104" in text, "the ASPP parameter count is missing"
    rows = {name: [float(v) for v in (error + values).split()] for name, error, values in re.findall(
        r"^(bilinear|DUC)\s+([\d.]+)%((?:\s+[\d.]+){3})$", text, re.M)}
    assert set(rows) == {"bilinear", "DUC"}, "the DUC experiment's table is missing"
    duc, bilinear = rows["DUC"], rows["bilinear"]
    assert duc[0] < bilinear[0] and all(d > b for d, b in zip(duc[1:], bilinear[1:])), \
        "the prose claims DUC has the lower pixel error and a higher IoU for every class"
    for term in ["空洞卷积", "感受野", "网格效应", "空洞空间金字塔池化", "深度可分离卷积"]:
        assert term in page


MISTAKES = [
    Mistake("flipped_kernel", {"conv2d": edit("w = weight.reshape(", "w = weight.flip(-1, -2).reshape(")},
            {"conv2d"}, "you flipped the kernel: F.conv2d is a cross-correlation"),
    Mistake("calls_conv2d",
            {"conv2d": edit("    ### BEGIN SOLUTION\n",
                            "    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)\n")},
            {"conv2d"}, "conv2d calls torch.conv2d"),
    Mistake("reach_not_paths",
            {"coverage": edit("return counts[:, None] * counts[None, :]",
                              "return (counts[:, None] * counts[None, :] > 0).long()")},
            {"coverage"}, "count the paths, not just whether a pixel is reached"),
    Mistake("swapped_subpixels",
            {"DUC": edit("return self.pixel_shuffle(self.conv(x))",
                         "y, r = self.conv(x), self.pixel_shuffle.upscale_factor\n"
                         "        N, C, H, W = y.shape\n"
                         "        return y.view(N, C // (r * r), r, r, H, W).permute(0, 1, 4, 3, 5, 2)"
                         ".reshape(N, C // (r * r), H * r, W * r)")},
            {"DUC"}, "you swapped i and j"),
]
