"""Tests of the reference code in solutions/roi.py.

Oracles (torchvision is not installed, so its semantics come from its source):
the loop ports of torchvision's CPU kernels in autograder/oracles/roi.py (forward,
the kernels' own backward rules, and autograd through the loops);
torch.autograd.gradcheck; analytic cases (bilinear interpolation reproduces a
linear ramp exactly, a single sample's gradient is its four bilinear weights,
C's round half away from zero against torch.round's half to even); and the
signatures and reprs of torchvision.ops, transcribed.
"""
import inspect
import math
import re

import pytest
import torch
from torch import nn

from autograder.oracles import roi as S
from solutions import roi as R
from tests import helpers
from tests.helpers import (Mistake, OpRecorder, check_probe, edit, printed_ratio, probe_cases,
                           quick_rows, rand, random_rois, visible_text)


DT = torch.float64
DTYPES = [torch.float64, torch.float32]


def tol(dtype):
    return helpers.tol(dtype, float64=(1e-11, 1e-12), float32=(1e-5, 1e-5))


def as_list(rois, N):
    """The same boxes as a list of (L_i, 4) tensors, one per image (sorted by image)."""
    order = torch.argsort(rois[:, 0], stable=True)
    rois = rois[order]
    return rois, [rois[rois[:, 0] == n, 1:] for n in range(N)]


# ================================================================ signatures and modules

EMPTY = inspect.Parameter.empty


@pytest.mark.parametrize("name,expected", [
    ("roi_align", [("input", EMPTY), ("boxes", EMPTY), ("output_size", EMPTY),
                   ("spatial_scale", 1.0), ("sampling_ratio", -1), ("aligned", False)]),
    ("roi_pool", [("input", EMPTY), ("boxes", EMPTY), ("output_size", EMPTY),
                  ("spatial_scale", 1.0)]),
    ("box_iou", [("boxes1", EMPTY), ("boxes2", EMPTY)]),
])
def test_signatures_match_torchvision_ops(name, expected):
    params = inspect.signature(getattr(R, name)).parameters.values()
    assert [(p.name, p.default) for p in params] == expected


def test_module_signatures_match_torchvision():
    align = inspect.signature(R.RoIAlign.__init__).parameters.values()
    assert [(p.name, p.default) for p in align] == [
        ("self", EMPTY), ("output_size", EMPTY), ("spatial_scale", EMPTY),
        ("sampling_ratio", EMPTY), ("aligned", False)]
    pool = inspect.signature(R.RoIPool.__init__).parameters.values()
    assert [(p.name, p.default) for p in pool] == [
        ("self", EMPTY), ("output_size", EMPTY), ("spatial_scale", EMPTY)]
    assert list(inspect.signature(R.RoIAlign.forward).parameters) == ["self", "input", "rois"]


def test_module_reprs_are_torchvision_s():
    assert repr(R.RoIAlign((7, 7), 0.0625, 2, aligned=True)) == \
        "RoIAlign(output_size=(7, 7), spatial_scale=0.0625, sampling_ratio=2, aligned=True)"
    assert repr(R.RoIAlign(5, 0.5, -1)) == \
        "RoIAlign(output_size=5, spatial_scale=0.5, sampling_ratio=-1, aligned=False)"
    assert repr(R.RoIPool(7, 1 / 16)) == "RoIPool(output_size=7, spatial_scale=0.0625)"


@pytest.mark.parametrize("fmt", ["tensor", "list"])
def test_modules_call_the_functions(fmt):
    x = rand(2, 3, 10, 12, seed=1)
    rois = random_rois(9, 2, 10, 12, seed=2, scale=0.5)
    rois, boxes = as_list(rois, 2)
    arg = rois if fmt == "tensor" else boxes
    align = R.RoIAlign((3, 4), 0.5, 2, aligned=True)
    pool = R.RoIPool((3, 4), 0.5)
    assert torch.equal(align(x, arg), R.roi_align(x, rois, (3, 4), 0.5, 2, True))
    assert torch.equal(pool(x, arg), R.roi_pool(x, rois, (3, 4), 0.5))
    for m in (align, pool):
        assert isinstance(m, nn.Module) and not list(m.parameters()) and not m.state_dict()


@pytest.mark.parametrize("make,match", [
    (lambda: R.RoIAlign(0, 1.0, 2), "RoIAlign: output_size must be a positive int"),
    (lambda: R.RoIAlign(7, 0.0, 2), "RoIAlign: spatial_scale must be a positive finite"),
    (lambda: R.RoIAlign(7, 1.0, 2.0), "RoIAlign: sampling_ratio must be an int"),
    (lambda: R.RoIAlign(7, 1.0, 2, aligned="yes"), "RoIAlign: aligned must be True or False"),
    (lambda: R.RoIPool((7, -1), 1.0), "RoIPool: output_size must be a positive int"),
    (lambda: R.RoIPool(7, None), "RoIPool: spatial_scale must be a positive finite"),
])
def test_modules_check_arguments_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ================================================================ roi_align vs the kernel

ALIGN_GRID = [(sr, aligned, os, dtype)
              for sr in (-1, 0, 1, 2, 3)
              for aligned in (False, True)
              for os in (1, 3, (2, 4), [3, 1])
              for dtype in DTYPES]


@pytest.mark.parametrize("sampling_ratio,aligned,output_size,dtype", ALIGN_GRID, ids=str)
def test_roi_align_matches_kernel_loop(sampling_ratio, aligned, output_size, dtype):
    # j: the case without its dtype, so that both dtypes see every scale and box format
    j = ALIGN_GRID.index((sampling_ratio, aligned, output_size, dtype)) // len(DTYPES)
    scale = (1.0, 0.5, 0.37, 2.0)[j % 4]
    N, C, H, W = 2, 3, 7, 9
    x = rand(N, C, H, W, seed=j, dtype=dtype)
    rois = random_rois(10, N, H, W, seed=100 + j, dtype=dtype, quarter=j % 3 == 0, scale=scale)
    PH, PW = (output_size, output_size) if isinstance(output_size, int) else output_size
    if (j + j // 4) % 2:  # the list format gives the same output, in list order
        rois, boxes = as_list(rois, N)
        out = R.roi_align(x, boxes, output_size, scale, sampling_ratio, aligned)
    else:
        out = R.roi_align(x, rois, output_size, scale, sampling_ratio, aligned)
    expected = S.tv_roi_align(x, rois, output_size, scale, sampling_ratio, aligned)
    assert out.shape == (10, C, PH, PW) and out.dtype == dtype and out.is_contiguous()
    torch.testing.assert_close(out, expected, **tol(dtype))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_list_format_equals_torchvision_conversion(aligned, sampling_ratio):
    x = rand(3, 2, 8, 8, seed=3)
    boxes = [random_rois(k, 1, 8, 8, seed=k)[:, 1:] for k in (4, 0, 3)]  # image 1 has none
    rois = S.tv_convert_boxes_to_roi_format(boxes)
    assert rois[:, 0].tolist() == [0.0] * 4 + [2.0] * 3
    out = R.roi_align(x, boxes, 2, 1.0, sampling_ratio, aligned)
    torch.testing.assert_close(out, R.roi_align(x, rois, 2, 1.0, sampling_ratio, aligned),
                               rtol=0, atol=0)
    torch.testing.assert_close(out, S.tv_roi_align(x, rois, 2, 1.0, sampling_ratio, aligned),
                               **tol(DT))
    assert torch.equal(R.roi_align(x, tuple(boxes), 2, 1.0, sampling_ratio, aligned), out)


def test_roi_align_reads_the_image_of_each_batch_index():
    x = rand(3, 2, 8, 8, seed=4)
    rois = random_rois(6, 1, 8, 8, seed=5)
    for n in range(3):
        rois_n = rois.clone()
        rois_n[:, 0] = n
        torch.testing.assert_close(R.roi_align(x, rois_n, 3, sampling_ratio=2),
                                   R.roi_align(x[n:n + 1], rois, 3, sampling_ratio=2),
                                   rtol=0, atol=0)


# ---------------------------------------------------------------- roi_align analytic cases

def ramp(H, W, a=0.7, b=-1.3, c=0.25, C=1):
    """f(y, x) = a*y + b*x + c on pixel indices, (1, C, H, W) (channel k scaled by k + 1)."""
    y = torch.arange(H, dtype=DT)[:, None]
    x = torch.arange(W, dtype=DT)[None, :]
    f = a * y + b * x + c
    return torch.stack([(k + 1) * f for k in range(C)])[None]


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
def test_roi_align_reproduces_a_linear_ramp(aligned, sampling_ratio):
    # Bilinear interpolation is exact on a linear function and the samples of a
    # bin are symmetric about its centre, so each bin reads f at its centre:
    # y = y1 - offset + (ph + 0.5) * roi_h / PH, with offset 0.5 when aligned.
    H, W, a, b, c = 12, 14, 0.7, -1.3, 0.25
    x = ramp(H, W, a, b, c, C=2)
    boxes = torch.tensor([[2.0, 1.5, 9.5, 8.0], [3.25, 4.0, 12.0, 10.75], [1.0, 1.0, 3.0, 2.0]],
                         dtype=DT)
    PH, PW = 3, 4
    out = R.roi_align(x, [boxes], (PH, PW), 1.0, sampling_ratio, aligned)
    off = 0.5 if aligned else 0.0
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        ys = y1 - off + (torch.arange(PH, dtype=DT) + 0.5) * (y2 - y1) / PH
        xs = x1 - off + (torch.arange(PW, dtype=DT) + 0.5) * (x2 - x1) / PW
        f = a * ys[:, None] + b * xs[None, :] + c
        torch.testing.assert_close(out[k, 0], f, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out[k, 1], 2 * f, rtol=1e-12, atol=1e-12)


def one_sample(x, y_s, x_s, **kwargs):
    """roi_align of the 1-pixel box whose single sample (1x1 output, 1 sample) is at (y_s, x_s)."""
    box = torch.tensor([[0, x_s - 0.5, y_s - 0.5, x_s + 0.5, y_s + 0.5]], dtype=x.dtype)
    return R.roi_align(x, box, 1, sampling_ratio=1, **kwargs)[0, 0, 0, 0]


def test_roi_align_sample_rules_at_and_beyond_the_border():
    H, W = 5, 6
    x = (torch.arange(H * W, dtype=DT) + 1).view(1, 1, H, W)  # no zeros: 0 means "outside"
    pix = lambda y, xx: x[0, 0, y, xx]  # noqa: E731
    assert one_sample(x, 2.0, 3.0) == pix(2, 3)
    assert one_sample(x, 2.25, 3.0) == 0.75 * pix(2, 3) + 0.25 * pix(3, 3)
    # in [-1, 0]: snapped to 0, inclusive of -1
    assert one_sample(x, -0.5, 3.0) == pix(0, 3)
    assert one_sample(x, -1.0, 3.0) == pix(0, 3)
    assert one_sample(x, 2.0, -0.75) == pix(2, 0)
    assert one_sample(x, -1.0, -1.0) == pix(0, 0)
    # in [H-1, H]: the last row, inclusive of H
    assert one_sample(x, H - 0.5, 3.0) == pix(H - 1, 3)
    assert one_sample(x, float(H), 3.0) == pix(H - 1, 3)
    assert one_sample(x, 2.0, W - 0.25) == pix(2, W - 1)
    assert one_sample(x, float(H), float(W)) == pix(H - 1, W - 1)
    # outside [-1, H] x [-1, W]: 0
    for y_s, x_s in [(-1.25, 3.0), (H + 0.25, 3.0), (2.0, -1.5), (2.0, W + 0.5), (-2.0, W + 2.0)]:
        assert one_sample(x, y_s, x_s) == 0, (y_s, x_s)
    # the same rules in the loop port and in float32
    for y_s, x_s in [(-1.0, -1.0), (-1.25, 0.0), (H - 0.5, W + 0.0), (H + 0.25, 1.0)]:
        for dtype in DTYPES:
            xd = x.to(dtype)
            box = torch.tensor([[0, x_s - 0.5, y_s - 0.5, x_s + 0.5, y_s + 0.5]], dtype=dtype)
            assert one_sample(xd, y_s, x_s) == S.tv_roi_align(xd, box, 1, 1.0, 1)[0, 0, 0, 0]


def test_roi_align_boxes_wholly_or_partly_outside():
    x = rand(1, 2, 6, 7, seed=6) + 10  # no zeros inside
    outside = torch.tensor([[0, 20.0, 20.0, 30.0, 30.0], [0, -9.0, -9.0, -2.0, -3.0],
                            [0, 2.0, 9.0, 5.0, 12.0]], dtype=DT)
    for aligned in (False, True):
        for sr in (-1, 2):
            assert torch.equal(R.roi_align(x, outside, 3, 1.0, sr, aligned),
                               torch.zeros(3, 2, 3, 3, dtype=DT))
    # straddling the right edge: the bins beyond x = W + 1 read 0, the others do not
    partly = torch.tensor([[0, 4.0, 1.0, 12.0, 5.0]], dtype=DT)
    out = R.roi_align(x, partly, (2, 4), 1.0, 2, False)
    assert bool((out[..., :2] != 0).all()) and bool((out[..., 2:] == 0).all())
    torch.testing.assert_close(out, S.tv_roi_align(x, partly, (2, 4), 1.0, 2, False), **tol(DT))


def test_roi_align_tiny_boxes_clamped_to_one_pixel_only_when_not_aligned():
    x = ramp(8, 8, a=1.0, b=10.0, c=0.0)  # f(y, x) = y + 10 x
    tiny = torch.tensor([[0, 2.0, 3.0, 2.2, 3.1]], dtype=DT)
    # aligned=False: a 1 x 1 RoI from (x1, y1) = (2, 3), one sample at its centre
    assert R.roi_align(x, tiny, 1, 1.0, 1, False).item() == pytest.approx(3.5 + 10 * 2.5)
    # aligned=True: the box keeps its size, shifted by -0.5: centre (3.05 - 0.5, 2.1 - 0.5)
    assert R.roi_align(x, tiny, 1, 1.0, 1, True).item() == pytest.approx(2.55 + 10 * 1.6)
    assert R.roi_align(x, tiny, 1, 1.0, -1, True).item() == pytest.approx(2.55 + 10 * 1.6)
    # a zero-size box: adaptive sampling has ceil(0) = 0 samples -> 0 when aligned,
    # while a fixed sampling ratio reads the point itself
    point = torch.tensor([[0, 3.0, 2.0, 3.0, 2.0]], dtype=DT)
    assert R.roi_align(x, point, 2, 1.0, -1, True).abs().sum() == 0
    torch.testing.assert_close(R.roi_align(x, point, 2, 1.0, 2, True),
                               torch.full((1, 1, 2, 2), 1.5 + 10 * 2.5, dtype=DT))
    torch.testing.assert_close(R.roi_align(x, point, 2, 1.0, -1, False),
                               R.roi_align(x, point + torch.tensor([0, 0, 0, 1, 1.0]), 2))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 3])
def test_roi_align_degenerate_reversed_boxes(aligned, sampling_ratio):
    x = rand(1, 2, 8, 9, seed=7)
    rev = torch.tensor([[0, 5.0, 6.0, 3.0, 2.5], [0, 4.0, 2.0, 1.5, 7.0], [0, 6.5, 1.0, 6.25, 0.5]],
                       dtype=DT)
    out = R.roi_align(x, rev, (2, 3), 1.0, sampling_ratio, aligned)
    torch.testing.assert_close(out, S.tv_roi_align(x, rev, (2, 3), 1.0, sampling_ratio, aligned),
                               **tol(DT))
    if not aligned:  # a reversed side is clamped to 1 pixel from x1 (y1)
        unit = rev.clone()
        unit[:, 3:] = torch.maximum(unit[:, 3:], unit[:, 1:3] + 1)
        assert unit[1].tolist() == [0, 4.0, 2.0, 5.0, 7.0]
        torch.testing.assert_close(out, R.roi_align(x, unit, (2, 3), 1.0, sampling_ratio),
                                   rtol=1e-12, atol=1e-12)
    elif sampling_ratio == -1:  # negative size: no samples
        assert out.abs().sum() == 0


@pytest.mark.parametrize("fn", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("boxes", ["tensor", "list_of_empty", "empty_list"])
def test_empty_boxes_give_an_empty_output_with_a_gradient(fn, boxes):
    x = rand(2, 3, 5, 6, seed=8).requires_grad_()
    arg = {"tensor": torch.zeros(0, 5, dtype=DT),
           "list_of_empty": [torch.zeros(0, 4, dtype=DT)] * 2,
           "empty_list": []}[boxes]
    out = getattr(R, fn)(x, arg, (2, 3))
    assert out.shape == (0, 3, 2, 3) and out.dtype == DT
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.zeros_like(x))


@pytest.mark.parametrize("fn", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_non_contiguous_input(fn, layout):
    x = rand(2, 3, 7, 8, seed=9)
    if layout == "channels_last":
        y = x.contiguous(memory_format=torch.channels_last)
    else:
        base = torch.full((2, 3, 7, 17), float("nan"), dtype=DT)
        base[..., 1::2] = x
        y = base[..., 1::2]
    assert not y.is_contiguous() and torch.equal(x, y)
    rois = random_rois(7, 2, 7, 8, seed=10)
    torch.testing.assert_close(getattr(R, fn)(y, rois, 3), getattr(R, fn)(x, rois, 3),
                               rtol=0, atol=0)


# ---------------------------------------------------------------- roi_align gradients

GRAD_CONFIGS = [  # (output_size, spatial_scale, sampling_ratio, aligned)
    (2, 1.0, -1, False), ((3, 2), 0.5, 2, True), (2, 1.0, 1, True), ((2, 3), 0.75, 0, False),
    (1, 1.0, 3, False),
]


@pytest.mark.parametrize("config", GRAD_CONFIGS, ids=str)
def test_roi_align_gradient_matches_autograd_through_the_loop(config):
    output_size, scale, sr, aligned = config
    x = rand(2, 2, 6, 7, seed=11)
    rois = random_rois(5, 2, 6, 7, seed=12, quarter=True, scale=scale)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = R.roi_align(xa, rois, output_size, scale, sr, aligned)
    loop = S.tv_roi_align(xb, rois, output_size, scale, sr, aligned, differentiable=True)
    g = rand(*out.shape, seed=13)
    (ga,) = torch.autograd.grad(out, xa, g)
    (gb,) = torch.autograd.grad(loop, xb, g)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)
    # and the kernel's own backward rule, ported without autograd
    torch.testing.assert_close(ga, S.tv_roi_align_backward(g, rois, x.shape, scale, sr, aligned),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("config", GRAD_CONFIGS[:3], ids=str)
def test_roi_align_gradcheck(config):
    output_size, scale, sr, aligned = config
    x = rand(2, 2, 5, 6, seed=14).requires_grad_()
    rois = random_rois(4, 2, 5, 6, seed=15, scale=scale)
    assert torch.autograd.gradcheck(
        lambda t: R.roi_align(t, rois, output_size, scale, sr, aligned), (x,))


def test_roi_align_gradient_of_one_sample_goes_to_its_four_neighbours():
    x = rand(2, 3, 6, 7, seed=16).requires_grad_()
    # one bin, one sample at (y, x) = (2.25, 3.75) of image 1, channel 2
    box = torch.tensor([[1, 3.25, 1.75, 4.25, 2.75]], dtype=DT)
    out = R.roi_align(x, box, 1, sampling_ratio=1)
    (grad,) = torch.autograd.grad(out[0, 2, 0, 0], x)
    expected = torch.zeros_like(x)
    ly, lx = 0.25, 0.75
    expected[1, 2, 2, 3] = (1 - ly) * (1 - lx)
    expected[1, 2, 2, 4] = (1 - ly) * lx
    expected[1, 2, 3, 3] = ly * (1 - lx)
    expected[1, 2, 3, 4] = ly * lx
    torch.testing.assert_close(grad, expected, rtol=1e-15, atol=1e-15)
    # a 2 x 2 grid of samples: each gets 1/4 of the bin's gradient, total weight 1
    box = torch.tensor([[0, 1.0, 1.0, 3.0, 3.0]], dtype=DT)  # samples at 1.5 and 2.5
    out = R.roi_align(x, box, 1, sampling_ratio=2)
    (grad,) = torch.autograd.grad(out[0, 0, 0, 0], x)
    block = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=DT) / 16
    assert torch.equal(grad[0, 0, 1:4, 1:4], block) and grad.sum().item() == pytest.approx(1)


def test_roi_align_boxes_get_no_gradient():
    x = rand(1, 2, 6, 6, seed=17).requires_grad_()
    rois = random_rois(3, 1, 6, 6, seed=18).requires_grad_()
    out = R.roi_align(x, rois, 2)
    out.sum().backward()
    assert rois.grad is None and x.grad is not None


# ================================================================ roi_pool vs the kernel

POOL_GRID = [(os, scale, dtype, quarter)
             for os in (1, 2, (3, 2), [2, 5], 4)
             for scale in (1.0, 0.5, 0.3, 2.0)
             for quarter in (False, True)
             for dtype in DTYPES]


@pytest.mark.parametrize("output_size,scale,dtype,quarter", POOL_GRID, ids=str)
def test_roi_pool_matches_kernel_loop(output_size, scale, dtype, quarter):
    # j: the case without its dtype, so that both dtypes see both box formats with either grid
    j = POOL_GRID.index((output_size, scale, dtype, quarter)) // len(DTYPES)
    N, C, H, W = 2, 3, 7, 8
    x = rand(N, C, H, W, seed=j, dtype=dtype)
    rois = random_rois(10, N, H, W, seed=200 + j, dtype=dtype, quarter=quarter, scale=scale)
    if (j + j // 2) % 2:
        rois, boxes = as_list(rois, N)
        out = R.roi_pool(x, boxes, output_size, scale)
    else:
        out = R.roi_pool(x, rois, output_size, scale)
    expected, _ = S.tv_roi_pool(x, rois, output_size, scale)
    PH, PW = (output_size, output_size) if isinstance(output_size, int) else output_size
    assert out.shape == (10, C, PH, PW) and out.dtype == dtype and out.is_contiguous()
    assert torch.equal(out, expected)  # a max selects an input value: exact


def test_roi_pool_rounds_half_away_from_zero():
    H, W = 6, 8
    x = torch.arange(1, H * W + 1, dtype=DT).view(1, 1, H, W)  # ramp: the max is bottom-right
    at = lambda y, xx: y * W + xx + 1  # noqa: E731
    pool = lambda *box, **kw: R.roi_pool(x, torch.tensor([[0, *box]], dtype=x.dtype), **kw)  # noqa: E731
    # the end pixel: 2.5 -> 3 and 0.5 -> 1 (torch.round would give 2 and 0), inclusive
    assert pool(0, 0, 2.5, 0.5, output_size=1).item() == at(1, 3)
    assert pool(0, 0, 1.5, 2.5, output_size=1).item() == at(3, 2)
    assert pool(0, 0, 4.49, 1.5, output_size=1).item() == at(2, 4)
    assert pool(0, 0, 5, 3, output_size=1, spatial_scale=0.5).item() == at(2, 3)  # 2.5, 1.5
    # a start of -0.5 rounds to -1 (torch.round: -0): the RoI is one pixel wider,
    # which moves the bin edges: bins [-1, 1) and [1, 3) -> max at x = 0 and 2
    assert pool(-0.5, 0, 2, 0, output_size=(1, 2)).flatten().tolist() == [at(0, 0), at(0, 2)]
    assert pool(0, 0, 2, 0, output_size=(1, 2)).flatten().tolist() == [at(0, 1), at(0, 2)]
    # -2.5 -> -3 (torch.round: -2): bins [-3, 0) (empty: 0) and [0, 3)
    assert pool(-2.5, 0, 2, 0, output_size=(1, 2)).flatten().tolist() == [0, at(0, 2)]
    assert pool(-2, 0, 2, 0, output_size=(1, 2)).flatten().tolist() == [at(0, 0), at(0, 2)]
    assert torch.round(torch.tensor([2.5, 0.5, -0.5, -2.5])).tolist() == [2, 0, -0, -2]
    # float32 0.49999997 rounds to 0; floor(v + 0.5) in float32 would give 1
    v = torch.tensor(0.49999997, dtype=torch.float32)
    assert torch.floor(v + 0.5).item() == 1
    x32 = x.float()
    box = torch.tensor([[0, 0, 0, 0.49999997, 0.49999997]], dtype=torch.float32)
    assert R.roi_pool(x32, box, 1).item() == at(0, 0)
    assert S.tv_roi_pool(x32, box, 1)[0].item() == at(0, 0)
    assert [S.tv_round(v) for v in (2.5, 0.5, -0.5, -2.5, 0.49999997)] == \
        [3, 1, -1, -3, 0]


def test_roi_pool_end_is_inclusive_and_bins_may_overlap():
    x = torch.arange(36, dtype=DT).view(1, 1, 6, 6)
    one = lambda *box, os=1: R.roi_pool(x, torch.tensor([[0, *box]], dtype=DT), os)  # noqa: E731
    assert one(2, 3, 2, 3).item() == 3 * 6 + 2           # a point box is one pixel
    assert one(0, 0, 2, 2).item() == 2 * 6 + 2           # 3 x 3 pixels
    # 5 rows in 2 bins: [0, ceil(2.5)) = [0, 3) and [floor(2.5), 5) = [2, 5): row 2 in both
    assert one(0, 0, 0, 4, os=(2, 1)).flatten().tolist() == [2 * 6, 4 * 6]
    neg = -x
    out = R.roi_pool(neg, torch.tensor([[0, 0, 0, 0, 4]], dtype=DT), (2, 1))
    assert out.flatten().tolist() == [0, -2 * 6]  # the shared row 2 is the max of bin 1


def test_roi_pool_empty_bins_give_zero():
    x = torch.full((1, 2, 5, 6), -7.0, dtype=DT)  # every value below 0
    rois = torch.tensor([[0, 20, 20, 30, 30],     # wholly outside: every bin empty
                         [0, -9, -9, -2, -3],
                         [0, 5, 0, 9, 0]], dtype=DT)  # 5 px from x = 5: bins 1..4 outside
    out = R.roi_pool(x, rois, (1, 5))
    assert torch.equal(out[:2], torch.zeros(2, 2, 1, 5, dtype=DT))
    assert out[2, :, 0].tolist() == [[-7, 0, 0, 0, 0]] * 2
    expected, argmax = S.tv_roi_pool(x, rois, (1, 5))
    assert torch.equal(out, expected) and int((argmax == -1).sum()) == 2 * (5 + 5 + 4)
    # more bins than pixels: 2 rows in 3 bins, [0, 1), [0, 2), [1, 2) are never empty
    y = torch.arange(12, dtype=DT).view(1, 1, 3, 4)
    assert R.roi_pool(y, torch.tensor([[0, 0, 0, 0, 1]], dtype=DT), (3, 1)).flatten().tolist() \
        == [0, 4, 4]


def test_roi_pool_malformed_boxes_are_one_pixel():
    x = rand(1, 2, 6, 7, seed=19)
    rev = torch.tensor([[0, 5, 4, 2, 1]], dtype=DT)
    out = R.roi_pool(x, rev, 2)
    assert torch.equal(out, x[:, :, 4:5, 5:6].expand(1, 2, 2, 2))


# ---------------------------------------------------------------- roi_pool gradients

@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("output_size,scale", [(2, 1.0), ((3, 2), 0.5), (4, 1.0)], ids=str)
def test_roi_pool_gradient_goes_to_the_argmax(output_size, scale, ties):
    x = rand(2, 2, 6, 7, seed=20)
    if ties:  # few distinct values: many ties, broken by the first maximum in row-major order
        x = torch.randint(0, 3, x.shape, generator=torch.Generator().manual_seed(0)).to(DT)
    rois = random_rois(8, 2, 6, 7, seed=21, quarter=True, scale=scale)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = R.roi_pool(xa, rois, output_size, scale)
    loop, argmax = S.tv_roi_pool(xb, rois, output_size, scale, differentiable=True)
    g = rand(*out.shape, seed=22)
    (ga,) = torch.autograd.grad(out, xa, g)
    (gb,) = torch.autograd.grad(loop, xb, g)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, S.tv_roi_pool_backward(g, rois, argmax, x.shape),
                               rtol=1e-12, atol=1e-12)


def test_roi_pool_gradient_first_maximum_and_empty_bins():
    x = torch.zeros(1, 1, 4, 4, dtype=DT, requires_grad=True)  # all tied
    out = R.roi_pool(x, torch.tensor([[0, 0, 0, 3, 3], [0, 9, 9, 12, 12]], dtype=DT), 2)
    (grad,) = torch.autograd.grad(out.sum(), x)
    expected = torch.zeros(4, 4, dtype=DT)
    expected[0, 0] = expected[0, 2] = expected[2, 0] = expected[2, 2] = 1  # top-left of each bin
    assert torch.equal(grad[0, 0], expected)  # the empty RoI passes nothing


def test_roi_pool_gradcheck():
    x = rand(2, 2, 6, 6, seed=23).requires_grad_()
    rois = random_rois(5, 2, 6, 6, seed=24)
    assert torch.autograd.gradcheck(lambda t: R.roi_pool(t, rois, (2, 3)), (x,))


# ================================================================ box_iou

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.int64])
def test_box_iou_matches_loop(dtype):
    g = torch.Generator().manual_seed(25)
    xy1 = torch.randint(0, 20, (7, 2), generator=g).to(DT) + torch.rand(7, 2, generator=g)
    xy2 = torch.randint(0, 20, (5, 2), generator=g).to(DT) + torch.rand(5, 2, generator=g)
    b1 = torch.cat([xy1, xy1 + 1 + 9 * torch.rand(7, 2, generator=g)], 1)
    b2 = torch.cat([xy2, xy2 + 1 + 9 * torch.rand(5, 2, generator=g)], 1)
    if dtype == torch.int64:
        b1, b2 = b1.floor(), b2.floor()
    b1, b2 = b1.to(dtype), b2.to(dtype)
    out = R.box_iou(b1, b2)
    assert out.shape == (7, 5)
    assert out.dtype == (torch.float32 if dtype == torch.int64 else dtype)
    expected = S.tv_box_iou(b1, b2).to(out.dtype)
    torch.testing.assert_close(out, expected, **tol(out.dtype))
    assert bool((out > 0).any()) and bool((out == 0).any())


def test_box_iou_analytic_cases():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=DT)
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0],    # identical: 1
                      [3.0, 3.0, 5.0, 5.0],    # disjoint: 0
                      [2.0, 0.0, 4.0, 2.0],    # touching along an edge: 0
                      [1.0, 0.0, 3.0, 2.0],    # half overlap: 2 / 6
                      [0.5, 0.5, 1.5, 1.5],    # contained: 1 / 4
                      [-1.0, -1.0, 3.0, 3.0]], dtype=DT)  # containing: 4 / 16
    assert R.box_iou(a, b).flatten().tolist() == [1.0, 0.0, 0.0, 1 / 3, 0.25, 0.25]
    torch.testing.assert_close(R.box_iou(b, a), R.box_iou(a, b).T)
    torch.testing.assert_close(R.box_iou(b, b).diagonal(), torch.ones(6, dtype=DT))
    big = torch.rand(9, 4, dtype=DT, generator=torch.Generator().manual_seed(3))
    big[:, 2:] += big[:, :2] + 0.1
    iou = R.box_iou(big, big)
    torch.testing.assert_close(iou, iou.T, rtol=0, atol=0)
    assert bool(((iou >= 0) & (iou <= 1)).all())


def test_box_iou_degenerate_boxes_as_torchvision():
    line = torch.tensor([[1.0, 1.0, 1.0, 4.0]])   # zero width
    point = torch.tensor([[2.0, 2.0, 2.0, 2.0]])
    box = torch.tensor([[0.0, 0.0, 3.0, 3.0]])
    assert R.box_iou(line, box).item() == 0 and R.box_iou(box, point).item() == 0
    # 0 / 0: nan, exactly as torchvision (inter = 0, union = 0 + 0 - 0)
    assert math.isnan(R.box_iou(point, point).item()) and math.isnan(R.box_iou(line, line).item())
    assert math.isnan(R.box_iou(line, point).item())
    assert math.isnan(S.tv_box_iou(point, point).item())


def test_box_iou_empty_sets_and_dtypes():
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    assert R.box_iou(torch.zeros(0, 4), b).shape == (0, 3)
    assert R.box_iou(b, torch.zeros(0, 4)).shape == (3, 0)
    assert R.box_iou(b.half(), b.half()).dtype == torch.float32  # upcast, as torchvision
    assert R.box_iou(b.long(), b.long()).dtype == torch.get_default_dtype()
    assert R.box_iou(b.to(torch.int16), b.to(torch.int16)).tolist() == [[1.0] * 3] * 3


@pytest.mark.parametrize("args,exc,match", [
    ((torch.zeros(3, 5), torch.zeros(2, 4)), ValueError, r"boxes1 must have shape \(N, 4\).*got \(3, 5\)"),
    ((torch.zeros(3, 4), torch.zeros(4)), ValueError, r"boxes2 must have shape \(N, 4\).*got \(4,\)"),
    (([[0, 0, 1, 1]], torch.zeros(2, 4)), TypeError, "boxes1 must be a torch.Tensor, got list"),
    ((torch.zeros(2, 4, dtype=torch.bool), torch.zeros(2, 4)), TypeError, "real .* torch.bool"),
])
def test_box_iou_rejects_bad_arguments(args, exc, match):
    with pytest.raises(exc, match=match):
        R.box_iou(*args)


# ================================================================ argument errors

@pytest.mark.parametrize("fn", ["roi_align", "roi_pool"])
def test_boxes_tensor_without_batch_index_is_rejected(fn):
    x = rand(1, 2, 5, 5)
    with pytest.raises(ValueError, match=rf"{fn}: a boxes tensor must have shape \(K, 5\), got "
                                         r"\(3, 4\): a single tensor needs the batch index"):
        getattr(R, fn)(x, torch.zeros(3, 4, dtype=DT), 2)
    with pytest.raises(ValueError, match=r"must have shape \(K, 5\), got \(5,\)"):
        getattr(R, fn)(x, torch.zeros(5, dtype=DT), 2)
    with pytest.raises(ValueError, match=r"boxes\[1\] must be a tensor of shape \(L, 4\).*"
                                         r"got \(2, 5\)"):
        getattr(R, fn)(x, [torch.zeros(1, 4, dtype=DT), torch.zeros(2, 5, dtype=DT)], 2)
    with pytest.raises(TypeError, match="boxes must be a Tensor.K, 5. or a list"):
        getattr(R, fn)(x, torch.zeros(1, 5).numpy(), 2)


@pytest.mark.parametrize("fn", ["roi_align", "roi_pool"])
def test_input_and_box_dtypes_are_checked(fn):
    f = getattr(R, fn)
    box = torch.tensor([[0, 0, 0, 2, 2]], dtype=DT)
    with pytest.raises(TypeError, match="input must be a floating-point tensor, got torch.int64"):
        f(torch.ones(1, 1, 4, 4, dtype=torch.long), box.long(), 2)
    with pytest.raises(TypeError, match="boxes dtype torch.float32 differs from input dtype "
                                        "torch.float64"):
        f(rand(1, 1, 4, 4), box.float(), 2)
    with pytest.raises(TypeError, match=r"boxes\[0\] dtype torch.float32 differs"):
        f(rand(1, 1, 4, 4), [box[:, 1:].float()], 2)
    with pytest.raises(ValueError, match=r"input must have shape \(N, C, H, W\), got \(1, 4, 4\)"):
        f(rand(1, 4, 4), box, 2)
    with pytest.raises(ValueError, match="H, W >= 1"):
        f(rand(1, 1, 0, 4), box, 2)
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        f([[1.0]], box, 2)


@pytest.mark.parametrize("fn", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("batch,fmt", [(2.0, "tensor"), (-1.0, "tensor"), (0.5, "tensor"),
                                       (None, "list")])
def test_batch_index_out_of_range_is_an_error(fn, batch, fmt):
    x = rand(2, 1, 4, 4)
    if fmt == "tensor":
        boxes = torch.tensor([[0, 0, 0, 2, 2], [batch, 0, 0, 2, 2]], dtype=DT)
        match = rf"batch index {re.escape(repr(batch))} is not an integer in \[0, 1\]"
    else:  # three lists for two images
        boxes = [torch.zeros(1, 4, dtype=DT)] * 3
        match = r"batch index 2.0 is not an integer in \[0, 1\] \(input has N=2 images\)"
    with pytest.raises(ValueError, match=match):
        getattr(R, fn)(x, boxes, 2)


@pytest.mark.parametrize("fn", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_boxes_are_an_error(fn, bad):
    with pytest.raises(ValueError, match="non-finite coordinate"):
        getattr(R, fn)(rand(1, 1, 4, 4), torch.tensor([[0, 0, 0, bad, 2]], dtype=DT), 2)


@pytest.mark.parametrize("fn", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("size", [0, -1, (2, 0), (2,), (1, 2, 3), 2.0, (2.0, 2), True, None])
def test_output_size_must_be_positive(fn, size):
    with pytest.raises(ValueError, match=rf"{fn}: output_size must be a positive int or a pair"):
        getattr(R, fn)(rand(1, 1, 4, 4), torch.zeros(1, 5, dtype=DT), size)


@pytest.mark.parametrize("fn", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("scale", [0, -0.5, math.nan, math.inf, "1", None, True])
def test_spatial_scale_must_be_a_positive_number(fn, scale):
    with pytest.raises(ValueError, match="spatial_scale must be a positive finite number"):
        getattr(R, fn)(rand(1, 1, 4, 4), torch.zeros(1, 5, dtype=DT), 2, scale)


@pytest.mark.parametrize("ratio", [2.0, "2", None, True, 1.5])
def test_sampling_ratio_must_be_an_int(ratio):
    with pytest.raises(ValueError, match=rf"sampling_ratio must be an int .*got {re.escape(repr(ratio))}"):
        R.roi_align(rand(1, 1, 4, 4), torch.zeros(1, 5, dtype=DT), 2, 1.0, ratio)


@pytest.mark.parametrize("aligned", [1, 0, "True", None])
def test_aligned_must_be_a_bool(aligned):
    with pytest.raises(ValueError, match="aligned must be True or False"):
        R.roi_align(rand(1, 1, 4, 4), torch.zeros(1, 5, dtype=DT), 2, 1.0, -1, aligned)


# ================================================================ vectorisation

def count_ops(fn, K, fmt="tensor", backward=True):
    x = rand(2, 4, 12, 12, seed=26).requires_grad_()
    rois = random_rois(K, 2, 12, 12, seed=K)
    rois, boxes = as_list(rois, 2)
    recorder = OpRecorder()
    with recorder:
        out = fn(x, rois if fmt == "tensor" else boxes)
        if backward:
            out.backward(torch.ones_like(out))
    return recorder.ops


@pytest.mark.parametrize("name,fn", [
    ("roi_align adaptive", lambda x, b: R.roi_align(x, b, (3, 2), 0.8, -1, False)),
    ("roi_align fixed", lambda x, b: R.roi_align(x, b, 2, 1.0, 2, True)),
    ("roi_pool", lambda x, b: R.roi_pool(x, b, (3, 2), 0.8)),
])
@pytest.mark.parametrize("fmt", ["tensor", "list"])
def test_op_count_does_not_grow_with_the_number_of_boxes(name, fn, fmt):
    # A loop over boxes, bins or samples would dispatch more ops for more boxes
    # (and the adaptive grid grows with the largest box). From K = 2: with one box,
    # a reshape of the permuted gradient is a view rather than a copy.
    counts = [len(count_ops(fn, K, fmt)) for K in (2, 6, 40, 200)]
    assert len(set(counts)) == 1 and counts[0] < 300, counts


def test_no_builtin_pooling_or_sampling_op_is_dispatched():
    for fn in (lambda x, b: R.roi_align(x, b, 3, 1.0, -1, True), lambda x, b: R.roi_pool(x, b, 3)):
        ops = count_ops(fn, 10)
        used = [op for op in ops if re.search(r"pool|grid_sampler|upsample|interpolate|roi", op)]
        assert not used, used


# ================================================================ benchmark smoke test

def test_bench_quick_runs_and_prints_a_ratio_per_op():
    rows, stdout = quick_rows("bench/roi.py")
    names = ["roi_align", "roi_align_adaptive", "roi_pool"]
    expected = [(f"{name}_vs_loop", mode) for name in names for mode in ["fwd", "fwd+bwd"]]
    expected += [("roi_align_vs_ort", "fwd"), ("roi_align_adaptive_vs_ort", "fwd")]
    for row in expected:
        assert row in rows, f"no {row} row in:\n{stdout}"
        ref_ms, other_ms, ratio, rel_diff = rows[row]
        assert printed_ratio(ratio, ref_ms, other_ms), row
        assert rel_diff < 1e-5, f"reference and baseline disagree: {row}"
    assert "load average" in stdout


# ================================================================ the grader's probes

def _oracle_rois(boxes):
    return boxes if isinstance(boxes, torch.Tensor) else S.tv_convert_boxes_to_roi_format(boxes)


def oracle_roi_pool(input, boxes, output_size, spatial_scale=1.0):
    return S.tv_roi_pool(input, _oracle_rois(boxes), output_size, spatial_scale,
                         differentiable=True)[0]


def oracle_roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1,
                     aligned=False):
    return S.tv_roi_align(input, _oracle_rois(boxes), output_size, spatial_scale, sampling_ratio,
                          aligned, differentiable=True)


def oracle_box_iou(boxes1, boxes2):
    """In the boxes' floating dtype, else the default one (torchvision's division)."""
    dtype = boxes1.dtype if boxes1.is_floating_point() else torch.get_default_dtype()
    return S.tv_box_iou(boxes1, boxes2).to(dtype)


COUNTERPARTS = dict(roi_pool=oracle_roi_pool, roi_align=oracle_roi_align, box_iou=oracle_box_iou)


@pytest.mark.parametrize("probe, seed", probe_cases("roi"))
def test_probe_agrees_with_the_kernel_ports(probe, seed):
    check_probe(probe, seed, R, COUNTERPARTS)


# -- the chapter's page and its classic mistakes --------------------------------

@pytest.mark.xdist_group("book")  # reads the session's one build of the book
def test_page_measures_the_misalignment(html):
    page = (html / "book/roi.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 4, "figures drawn by code are missing"
    text = visible_text(page)
    ious = {int(size): (float(a), float(b)) for size, a, b in re.findall(
        r"^\s*(16|32|64|128|256)\s+(0\.\d\d)\s+(0\.\d\d)$", text, re.M)}
    assert sorted(ious) == [16, 32, 64, 128, 256], "the IoU table is missing"
    assert max(ious[32]) < 0.5 and min(ious[256]) > 0.85, \
        "the prose claims RoI Pool's region has IoU < 0.5 at 32 px and > 0.85 at 256 px"
    errors = {}
    for model, size, pool, unaligned, aligned in re.findall(
            r"^(16j\+8|16j)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", text, re.M):
        errors.setdefault(model, {})[int(size)] = (float(pool), float(unaligned), float(aligned))
    assert set(errors) == {"16j+8", "16j"} and all(len(rows) == 5 for rows in errors.values()), \
        "the error table is missing"
    for model, matching in [("16j+8", 2), ("16j", 1)]:
        rows = [errors[model][size] for size in sorted(errors[model], reverse=True)]
        for op in range(3):
            column = [row[op] for row in rows]
            assert column == sorted(column), f"the prose claims every error grows as objects shrink ({model})"
        assert all(row[0] > row[matching] for row in rows), \
            f"the prose claims RoI Pool's error exceeds the matching RoI Align's at every size ({model})"
    shares = dict(re.findall(r"^(RoI Pool|RoI Align)\s+output unchanged by a 1-pixel shift in ([\d.]+)%",
                             text, re.M))
    assert 80 <= float(shares["RoI Pool"]) <= 95 and float(shares["RoI Align"]) == 0, \
        "the prose claims about seven in eight 1-pixel shifts leave RoI Pool unchanged, none RoI Align"
    for term in ["感兴趣区域池化", "量化误差", "双线性插值", "不对齐"]:
        assert term in page


# The RoI items are independent: no item's hidden tests call another answer.
MISTAKES = [
    Mistake("half_to_even",
            {"roi_pool": edit("torch.where((v - t).abs() >= 0.5, t + v.sign(), t)", "torch.round(v)")},
            {"roi_pool"}, "you rounded half to even"),
    # right at +0.5, wrong at -0.5: a visible test has a corner at -0.5
    Mistake("round_half_up",
            {"roi_pool": edit("torch.where((v - t).abs() >= 0.5, t + v.sign(), t)", "torch.floor(v + 0.5)")},
            {"roi_pool"}, "a corner at -0.5 became 0"),
    Mistake("unclamped_intersection",
            {"box_iou": edit("wh = upcast(rb - lt).clamp(min=0)", "wh = upcast(rb - lt)")},
            {"box_iou"}, "negative overlap: clamp the intersection width/height at 0"),
    Mistake("sub_cell_corners", {"roi_align": edit("(i + 0.5) * bin_size / n", "i * bin_size / n")},
            {"roi_align"}, "samples sit at the centres of the sub-cells"),
    Mistake("shared_sample_grid",
            {"roi_align": edit("grid_w, grid_h = bin_w.ceil().long(), bin_h.ceil().long()",
                               "grid_w = grid_h = bin_w.ceil().long().max().expand(K)")},
            {"roi_align"}, "each RoI has its own grid"),
    Mistake("imports_reference", {"box_iou": "from solutions.roi import box_iou\n"}, {"box_iou"},
            "No module named 'solutions'"),
]
