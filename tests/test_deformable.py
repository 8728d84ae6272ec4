"""Tests of the reference code in solutions/deformable.py.

Oracles: the loop ports of torchvision's CPU kernels in autograder/oracles/deformable_loops.py
(deform-conv bilinear rule, im2col forward, col2im / col2im_coord / weight
backward, RoI Align forward and backward); F.conv2d (zero offsets are a plain
convolution, integer offsets a shifted one); torch.autograd.gradcheck;
closed forms (bilinear interpolation reproduces affine and bilinear functions,
RoI Align of a ramp is the ramp at the bin centres); and op counts under a
dispatch mode, which show there is no Python loop over batch, taps or pixels.
"""
import inspect
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.oracles import deformable as O
from autograder.oracles import deformable_loops as S
from autograder.oracles.roi import tv_convert_boxes_to_roi_format
from solutions import deformable as D
from solutions import resnet
from tests.helpers import (Mistake, OpRecorder, check_probe, close, edit, pair, printed_ratio,
                           probe_cases, prose, quick_rows, rand, random_rois, sentences_with,
                           visible_text)


DT = torch.float64


def out_size(H, W, KH, KW, stride, padding, dilation):
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    return (H + 2 * ph - dh * (KH - 1) - 1) // sh + 1, (W + 2 * pw - dw * (KW - 1) - 1) // sw + 1


# ================================================================ bilinear_interpolate

def loop_bilinear(input, y, x):
    """torchvision's deform-conv rule point by point (autograder/oracles/deformable_loops.py)."""
    N, C, H, W = input.shape
    im = input.tolist()
    ys, xs = y.reshape(N, -1).tolist(), x.reshape(N, -1).tolist()
    out = [[[S.tv_bilinear(im[n][c], H, W, a, b) for a, b in zip(ys[n], xs[n])]
            for c in range(C)] for n in range(N)]
    return torch.tensor(out, dtype=DT).reshape(N, C, *y.shape[1:])


@pytest.mark.parametrize("S_shape", [(), (13,), (3, 5), (2, 2, 4)], ids=str)
@pytest.mark.parametrize("HW", [(4, 6), (1, 1), (1, 5), (7, 2)], ids=str)
def test_bilinear_matches_torchvision_rule(HW, S_shape):
    H, W = HW
    x = rand(2, 3, H, W, seed=1)
    py = rand(2, *S_shape, seed=2, low=-2.0, high=H + 1.0)  # inside, border bands and outside
    px = rand(2, *S_shape, seed=3, low=-2.0, high=W + 1.0)
    out = D.bilinear_interpolate(x, py, px)
    assert out.shape == (2, 3, *S_shape) and out.dtype == DT
    close(out, loop_bilinear(x, py, px), "vs torchvision's rule")


def test_bilinear_float32():
    x = rand(3, 4, 5, 6, seed=4, dtype=torch.float32)
    py = rand(3, 40, seed=5, low=-1.5, high=5.5, dtype=torch.float32)
    px = rand(3, 40, seed=6, low=-1.5, high=6.5, dtype=torch.float32)
    out = D.bilinear_interpolate(x, py, px)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), loop_bilinear(x.double(), py.double(), px.double()),
                               rtol=1e-5, atol=1e-5)


def test_bilinear_integer_points_read_pixels_and_outside_reads_zero():
    H, W = 4, 5
    x = rand(2, 3, H, W, seed=7)
    gy, gx = torch.meshgrid(torch.arange(-2, H + 2, dtype=DT), torch.arange(-2, W + 2, dtype=DT),
                            indexing="ij")
    out = D.bilinear_interpolate(x, gy.expand(2, -1, -1), gx.expand(2, -1, -1))
    padded = F.pad(x, (2, 2, 2, 2))  # zeros from -2 to -1 and from H to H+1
    assert torch.equal(out, padded)
    far = torch.tensor([[-1.0, 0.5], [0.5, -1.0], [H, 0.5], [0.5, W], [-1e6, 2.0], [2.0, 1e6],
                        [-1.0001, 1.0], [H + 0.3, -1.5]], dtype=DT)
    out = D.bilinear_interpolate(x, far[:, 0].expand(2, -1), far[:, 1].expand(2, -1))
    assert torch.equal(out, torch.zeros_like(out))


def test_bilinear_border_band_fades_linearly_to_zero():
    H, W = 3, 4
    x = rand(1, 2, H, W, seed=8)
    t = torch.tensor([0.1, 0.25, 0.5, 0.9], dtype=DT)
    cases = [  # (y, x, expected)
        (-t, torch.full_like(t, 2.0), (1 - t)[None] * x[0, :, 0, 2:3]),          # -1 < y < 0
        (H - 1 + t, torch.full_like(t, 1.0), (1 - t)[None] * x[0, :, H - 1, 1:2]),  # H-1 < y < H
        (torch.full_like(t, 1.0), -t, (1 - t)[None] * x[0, :, 1, 0:1]),          # -1 < x < 0
        (torch.full_like(t, 2.0), W - 1 + t, (1 - t)[None] * x[0, :, 2, W - 1:W]),
        (-t, -t, ((1 - t) ** 2)[None] * x[0, :, 0, 0:1]),                        # corner
    ]
    for py, px, expected in cases:
        close(D.bilinear_interpolate(x, py[None], px[None])[0], expected, f"y={py}, x={px}")


def test_bilinear_reproduces_bilinear_functions_inside():
    # f(y, x) = a + b y + c x + d y x is reproduced exactly inside [0, H-1] x [0, W-1]
    H, W = 5, 7
    gy, gx = torch.meshgrid(torch.arange(H, dtype=DT), torch.arange(W, dtype=DT), indexing="ij")
    coef = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=DT)
    f = lambda y, x: coef[0] + coef[1] * y + coef[2] * x + coef[3] * y * x  # noqa: E731
    img = torch.stack([f(gy, gx), 3 * f(gy, gx)]).unsqueeze(0)
    py = rand(1, 50, seed=9, low=0.0, high=H - 1.0)
    px = rand(1, 50, seed=10, low=0.0, high=W - 1.0)
    out = D.bilinear_interpolate(img, py, px)
    close(out, torch.stack([f(py, px), 3 * f(py, px)], 1))


def test_bilinear_gradients_match_torchvision_and_gradcheck():
    H, W = 4, 5
    x = rand(2, 3, H, W, seed=11)
    py = rand(2, 30, seed=12, low=-1.5, high=H + 0.5)
    px = rand(2, 30, seed=13, low=-1.5, high=W + 0.5)
    # d(sum_c out)/dy against torchvision's get_coordinate_weight
    ys, xs = py.clone().requires_grad_(), px.clone().requires_grad_()
    gy, gx = torch.autograd.grad(D.bilinear_interpolate(x, ys, xs).sum(), (ys, xs))
    im = x.tolist()
    for n in range(2):
        for p in range(30):
            a, b = py[n, p].item(), px[n, p].item()
            ey = sum(S.tv_coordinate_weight(im[n][c], H, W, a, b, True) for c in range(3))
            ex = sum(S.tv_coordinate_weight(im[n][c], H, W, a, b, False) for c in range(3))
            if a <= -1 or a >= H or b <= -1 or b >= W:
                ey = ex = 0.0  # the forward is 0 there; torchvision's cut-off point set
            assert abs(gy[n, p].item() - ey) < 1e-10 and abs(gx[n, p].item() - ex) < 1e-10, (a, b)
    leaves = (x[:1, :2].clone().requires_grad_(), py[:1, :9].clone().requires_grad_(),
              px[:1, :9].clone().requires_grad_())
    assert torch.autograd.gradcheck(D.bilinear_interpolate, leaves)


def test_bilinear_hand_written_backward_covers_every_branch():
    # points inside, in each border band, beyond it (they read 0) on every side; gradients
    # w.r.t. the image alone, the points alone, and all three (the backward skips the others)
    H, W = 3, 4
    image = rand(2, 2, H, W, seed=14)
    ys = torch.tensor([0.3, -0.6, H - 0.7, -1.8, H + 0.4, 1.5, 2.2, -0.2], dtype=DT)
    xs = torch.tensor([1.4, 2.5, 0.6, 1.1, 2.3, -0.7, W - 0.4, W + 1.3], dtype=DT)
    points = ys.repeat(2, 1), xs.flip(0).repeat(2, 1)
    for wrt in [(True, True, True), (True, False, False), (False, True, True)]:
        leaves = [t.clone().requires_grad_(r) for t, r in zip((image, *points), wrt)]
        assert torch.autograd.gradcheck(D.bilinear_interpolate, leaves), wrt


def test_deform_conv2d_empty_batch_backward():
    x, offset, w, b, mask, kw = loop_inputs(LOOP_CASES[-1])
    leaves = [t.requires_grad_() for t in (x, offset, w, b, mask)]
    out = D.deform_conv2d(*leaves[:4], mask=leaves[4], **kw)
    grads = torch.autograd.grad(out.sum(), leaves)
    assert [g.shape for g in grads] == [t.shape for t in leaves]
    assert not grads[2].any() and not grads[3].any()


def test_bilinear_rejects_bad_arguments():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="y and x must have the same shape"):
        D.bilinear_interpolate(x, torch.zeros(2, 5), torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"shape \(N, \*S\) with N=2"):
        D.bilinear_interpolate(x, torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(TypeError, match="y dtype torch.float64 differs from input dtype "
                                        "torch.float32"):
        D.bilinear_interpolate(x, torch.zeros(2, 5, dtype=DT), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="input must have 4 dimensions"):
        D.bilinear_interpolate(torch.zeros(3, 4, 4), torch.zeros(3, 5), torch.zeros(3, 5))


# ================================================================ deform_conv2d vs F.conv2d

def test_deform_conv2d_signature_is_torchvisions():
    # torchvision: (input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0),
    #               dilation=(1, 1), mask=None); an int means the same pair here.
    params = inspect.signature(D.deform_conv2d).parameters
    assert list(params) == ["input", "offset", "weight", "bias", "stride", "padding", "dilation",
                            "mask"]
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    assert defaults == dict(bias=None, stride=1, padding=0, dilation=1, mask=None)


GEOMS = [  # (N, C_in, C_out, H, W, KH, KW)
    (2, 4, 8, 7, 8, 3, 3),
    (1, 4, 4, 5, 6, 1, 1),
    (3, 4, 8, 6, 7, 2, 3),
    (2, 4, 4, 5, 9, 1, 4),
    (1, 4, 8, 9, 7, 5, 5),
]
ARGS = [  # (stride, padding, dilation)
    (1, 0, 1), (2, 1, 1), (1, 2, 2), ((2, 1), (0, 2), (1, 3)), (3, (1, 0), (2, 1)),
    ([1, 2], [2, 2], [2, 2]),
]


def zero_offsets(N, G, KH, KW, Ho, Wo, dtype=DT):
    return torch.zeros(N, 2 * G * KH * KW, Ho, Wo, dtype=dtype)


# every geometry with every (stride, padding, dilation) whose kernel fits the padded input
# (a kernel larger than it is tested in the errors)
FITTING = [(g, a) for g in GEOMS for a in ARGS if min(out_size(*g[3:], *a)) >= 1]


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("groups,offset_groups", [(1, 1), (2, 1), (1, 4), (4, 2), (2, 2)], ids=str)
@pytest.mark.parametrize("geom,args", FITTING, ids=str)
def test_zero_offsets_equal_conv2d(geom, args, groups, offset_groups, mask):
    N, C, O, H, W, KH, KW = geom
    stride, padding, dilation = args
    Ho, Wo = out_size(H, W, KH, KW, stride, padding, dilation)
    x, w, b = rand(N, C, H, W, seed=1), rand(O, C // groups, KH, KW, seed=2), rand(O, seed=3)
    m = torch.ones(N, offset_groups * KH * KW, Ho, Wo, dtype=DT) if mask else None
    out = D.deform_conv2d(x, zero_offsets(N, offset_groups, KH, KW, Ho, Wo), w, b, stride,
                          padding, dilation, mask=m)
    expected = F.conv2d(x, w, b, stride, padding, dilation, groups)
    assert out.shape == expected.shape
    close(out, expected)


@pytest.mark.parametrize("args", ARGS[:4], ids=str)
def test_zero_offsets_equal_conv2d_float32(args):
    stride, padding, dilation = args
    f32 = torch.float32
    x, w, b = rand(2, 4, 8, 9, seed=4, dtype=f32), rand(6, 2, 3, 3, seed=5, dtype=f32), \
        rand(6, seed=6, dtype=f32)
    Ho, Wo = out_size(8, 9, 3, 3, stride, padding, dilation)
    out = D.deform_conv2d(x, zero_offsets(2, 2, 3, 3, Ho, Wo, torch.float32), w, b, stride,
                          padding, dilation)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.conv2d(x, w, b, stride, padding, dilation, 2),
                               rtol=1e-5, atol=1e-5)


def shifted_conv(x, w, b, dy, dx, stride, padding, dilation, groups):
    """F.conv2d reading every tap (dy, dx) pixels away: the image on a zero canvas, cropped."""
    (ph, pw), (H, W) = pair(padding), x.shape[-2:]
    Ho, Wo = out_size(H, W, *w.shape[-2:], stride, padding, dilation)
    M = max(abs(dy), abs(dx)) + max(ph, pw)
    canvas = F.pad(x, (M, M, M, M))
    crop = canvas[:, :, M - ph + dy:, M - pw + dx:]
    return F.conv2d(crop, w, b, stride, 0, dilation, groups)[:, :, :Ho, :Wo]


@pytest.mark.parametrize("shift", [(1, 0), (0, -2), (-1, 3), (2, 2), (-4, -1)], ids=str)
@pytest.mark.parametrize("args", ARGS[:5], ids=str)
def test_integer_offsets_equal_shifted_conv(shift, args):
    dy, dx = shift
    stride, padding, dilation = args
    N, C, O, H, W, KH, KW = 2, 4, 6, 7, 8, 3, 2
    x, w, b = rand(N, C, H, W, seed=7), rand(O, C // 2, KH, KW, seed=8), rand(O, seed=9)
    Ho, Wo = out_size(H, W, KH, KW, stride, padding, dilation)
    offset = torch.tensor([dy, dx], dtype=DT).repeat(KH * KW).view(1, -1, 1, 1)
    offset = offset.expand(N, -1, Ho, Wo)  # every tap (dy, dx): interleaved
    out = D.deform_conv2d(x, offset, w, b, stride, padding, dilation)
    close(out, shifted_conv(x, w, b, dy, dx, stride, padding, dilation, 2))


def test_offset_groups_split_the_channels_into_consecutive_blocks():
    # group 0 (channels 0-1) unshifted, group 1 (channels 2-3) shifted by one row
    N, C, H, W = 2, 4, 6, 5
    x, w = rand(N, C, H, W, seed=10), rand(3, C, 3, 3, seed=11)
    offset = torch.zeros(N, 2, 9, 2, H - 2, W - 2, dtype=DT)  # (N, G, taps, (dy, dx), Ho, Wo)
    offset[:, 1, :, 0] = 1.0
    out = D.deform_conv2d(x, offset.reshape(N, 36, H - 2, W - 2), w)
    shifted = x.clone()
    shifted[:, 2:] = F.pad(x[:, 2:, 1:], (0, 0, 0, 1))  # row i reads row i+1, row H-1 zeros
    close(out, F.conv2d(shifted, w))


# ================================================================ layout, mask

def test_offset_layout_is_interleaved_dy_dx_per_tap():
    N, H, W = 1, 5, 6
    x = rand(N, 1, H, W, seed=12)
    ones = torch.ones(1, 1, 1, 1, dtype=DT)
    # 1x1 kernel: channel 0 is dy (rows), channel 1 is dx (columns)
    dy_only = torch.zeros(N, 2, H, W, dtype=DT)
    dy_only[:, 0] = 1.0
    close(D.deform_conv2d(x, dy_only, ones), F.pad(x[:, :, 1:], (0, 0, 0, 1)))
    dx_only = torch.zeros(N, 2, H, W, dtype=DT)
    dx_only[:, 1] = 1.0
    close(D.deform_conv2d(x, dx_only, ones), F.pad(x[:, :, :, 1:], (0, 1, 0, 0)))
    half = dy_only * 0.5  # halfway down: the mean of two rows
    close(D.deform_conv2d(x, half, ones), (x + F.pad(x[:, :, 1:], (0, 0, 0, 1))) / 2)
    # 1x2 kernel [a, b]: channels (dy0, dx0, dy1, dx1) = (1, 0, 0, 1): tap 0 down, tap 1 right
    w = torch.tensor([2.0, 10.0], dtype=DT).view(1, 1, 1, 2)
    offset = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=DT).view(1, 4, 1, 1).expand(N, 4, H, W - 1)
    canvas = F.pad(x, (0, 2, 0, 1))
    expected = 2.0 * canvas[:, :, 1:H + 1, 0:W - 1] + 10.0 * canvas[:, :, 0:H, 2:W + 1]
    close(D.deform_conv2d(x, offset.contiguous(), w), expected)


def test_mask_is_used_as_given_and_per_tap():
    N, C, H, W = 2, 4, 6, 6
    x, w, b = rand(N, C, H, W, seed=13), rand(5, C, 3, 3, seed=14), rand(5, seed=15)
    off = zero_offsets(N, 1, 3, 3, 4, 4)
    conv = F.conv2d(x, w)
    for c in (2.0, -1.0, 0.0, 0.5):  # no sigmoid could give 2 or -1
        mask = torch.full((N, 9, 4, 4), c, dtype=DT)
        close(D.deform_conv2d(x, off, w, b, mask=mask), c * conv + b.view(1, -1, 1, 1), f"mask={c}")
    # a mask that keeps only tap 4 (the centre) equals the conv with only that tap
    mask = torch.zeros(N, 9, 4, 4, dtype=DT)
    mask[:, 4] = 1.0
    centre = torch.zeros_like(w)
    centre[..., 1, 1] = w[..., 1, 1]
    close(D.deform_conv2d(x, off, w, mask=mask), F.conv2d(x, centre))


# ================================================================ vs torchvision's kernel (loop port)

LOOP_CASES = [  # (N, C_in, C_out, H, W, KH, KW, stride, padding, dilation, groups, G, mask)
    (2, 4, 6, 6, 7, 3, 3, 1, 1, 1, 1, 1, False),
    (2, 4, 6, 6, 7, 3, 3, 1, 1, 1, 2, 2, True),
    (1, 4, 4, 7, 6, 3, 2, 2, 0, 1, 1, 4, True),
    (2, 2, 4, 6, 6, 2, 3, (2, 1), (0, 1), (1, 2), 2, 1, False),
    (1, 6, 3, 8, 7, 3, 3, 2, 2, 2, 3, 2, True),
    (2, 3, 2, 5, 5, 1, 1, 1, 0, 1, 1, 3, True),
    (1, 2, 2, 4, 9, 1, 5, (1, 3), (1, 2), (1, 1), 1, 2, False),
    (3, 4, 4, 5, 4, 2, 2, 1, 1, 3, 4, 1, True),
    (33, 2, 2, 4, 4, 2, 2, 1, 0, 1, 1, 1, True),   # above torchvision's 32-image blocks
    (37, 2, 3, 3, 3, 3, 3, 2, 1, 1, 1, 2, False),  # 37 is prime: one image per block there
    (0, 2, 4, 5, 5, 3, 3, 1, 1, 1, 1, 1, True),    # empty batch
]


def loop_inputs(case, seed=0, scale=1.5):
    N, C, O, H, W, KH, KW, stride, padding, dilation, groups, G, with_mask = case
    Ho, Wo = out_size(H, W, KH, KW, stride, padding, dilation)
    x = rand(N, C, H, W, seed=seed + 1)
    offset = scale * rand(N, 2 * G * KH * KW, Ho, Wo, seed=seed + 2)  # some taps leave the image
    w = rand(O, C // groups, KH, KW, seed=seed + 3)
    b = rand(O, seed=seed + 4)
    mask = rand(N, G * KH * KW, Ho, Wo, seed=seed + 5, low=-0.5, high=1.5) if with_mask else None
    return x, offset, w, b, mask, dict(stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("case", LOOP_CASES, ids=str)
def test_deform_conv2d_matches_torchvision_kernel(case):
    x, offset, w, b, mask, kw = loop_inputs(case)
    out = D.deform_conv2d(x, offset, w, b, mask=mask, **kw)
    expected = S.deform_conv2d_loop(x, offset, w, b, mask=mask, **kw)
    assert out.shape == expected.shape
    close(out, expected)
    close(D.deform_conv2d(x, offset, w, None, mask=mask, **kw), expected - b.view(1, -1, 1, 1),
          "no bias")


@pytest.mark.parametrize("case", [LOOP_CASES[i] for i in (0, 1, 2, 4, 6, 7)], ids=str)
def test_deform_conv2d_float32_matches_torchvision_kernel(case):
    x, offset, w, b, mask, kw = loop_inputs(case, seed=20)
    f32 = [None if t is None else t.float() for t in (x, offset, w, b, mask)]
    out = D.deform_conv2d(*f32[:4], mask=f32[4], **kw)
    assert out.dtype == torch.float32
    expected = S.deform_conv2d_loop(*[None if t is None else t.double() for t in f32[:4]],
                                    mask=None if mask is None else f32[4].double(), **kw)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("case", [LOOP_CASES[i] for i in (1, 2, 3, 4, 8)], ids=str)
def test_deform_conv2d_gradients_match_torchvision_backward(case):
    x, offset, w, b, mask, kw = loop_inputs(case, seed=30)
    leaves = [t.clone().requires_grad_() for t in (x, offset, w, b)]
    m = None if mask is None else mask.clone().requires_grad_()
    out = D.deform_conv2d(*leaves, mask=m, **kw)
    g = rand(*out.shape, seed=31)
    got = torch.autograd.grad(out, leaves + ([m] if m is not None else []), g)
    gi, go, gm, gw, gb = S.deform_conv2d_backward_loop(g, x, offset, w, mask=mask, **kw)
    for name, a, e in zip(["input", "offset", "weight", "bias", "mask"], got, [gi, go, gw, gb, gm]):
        close(a, e, f"grad {name}")


@pytest.mark.parametrize("kw,groups,G,with_mask", [
    (dict(stride=1, padding=1, dilation=1), 1, 1, True),
    (dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2)), 2, 2, True),
    (dict(stride=1, padding=0, dilation=2), 4, 4, False),
], ids=str)
def test_deform_conv2d_gradcheck(kw, groups, G, with_mask):
    N, C, O, H, W, KH, KW = 1, 4, 4, 5, 5, 3, 2
    Ho, Wo = out_size(H, W, KH, KW, kw["stride"], kw["padding"], kw["dilation"])
    leaves = [rand(N, C, H, W, seed=40), 1.3 * rand(N, 2 * G * KH * KW, Ho, Wo, seed=41),
              rand(O, C // groups, KH, KW, seed=42), rand(O, seed=43)]
    if with_mask:
        leaves.append(rand(N, G * KH * KW, Ho, Wo, seed=44))
    leaves = [t.requires_grad_() for t in leaves]

    def f(x, offset, w, b, mask=None):
        return D.deform_conv2d(x, offset, w, b, mask=mask, **kw)

    assert torch.autograd.gradcheck(f, tuple(leaves))


def test_deform_conv2d_batch_of_70_equals_its_samples_one_by_one():
    N = 70
    x, offset, w, b, mask, kw = loop_inputs((N, 2, 3, 5, 5, 3, 3, 1, 1, 1, 1, 1, True), seed=50)
    out = D.deform_conv2d(x, offset, w, b, mask=mask, **kw)
    for n in (0, 31, 32, 33, 63, 64, 69):
        close(out[n:n + 1], D.deform_conv2d(x[n:n + 1], offset[n:n + 1], w, b,
                                            mask=mask[n:n + 1], **kw), f"sample {n}")


@pytest.mark.parametrize("layout", ["sliced_offset", "channels_last", "transposed"])
def test_deform_conv2d_non_contiguous_inputs(layout):
    x, offset, w, b, mask, kw = loop_inputs(LOOP_CASES[1], seed=60)
    expected = D.deform_conv2d(x, offset, w, b, mask=mask, **kw)
    if layout == "sliced_offset":  # as DeformConv2d passes them: channel slices of one tensor
        both = torch.cat([offset, mask], 1)
        offset, mask = both[:, :offset.shape[1]], both[:, offset.shape[1]:]
    elif layout == "channels_last":
        x, offset = x.contiguous(memory_format=torch.channels_last), \
            offset.contiguous(memory_format=torch.channels_last)
    else:
        x = x.transpose(2, 3).contiguous().transpose(2, 3)
        w = w.transpose(0, 3).contiguous().transpose(0, 3)
    assert not (x.is_contiguous() and offset.is_contiguous() and mask.is_contiguous()
                and w.is_contiguous())
    close(D.deform_conv2d(x, offset, w, b, mask=mask, **kw), expected)


# ================================================================ vectorisation

def test_deform_conv2d_op_count_does_not_grow_with_batch_taps_or_image():
    # A Python loop over samples, taps, positions or groups would dispatch more
    # ops for the larger cases (N = 40, 25 taps, 20 x 20 outputs, 4 groups).
    def count(N, H, K, groups, G):
        Ho = H - K + 3
        leaves = [rand(N, 4, H, H), rand(N, 2 * G * K * K, Ho, Ho), rand(8, 4 // groups, K, K),
                  rand(8), rand(N, G * K * K, Ho, Ho)]
        leaves = [t.requires_grad_() for t in leaves]
        recorder = OpRecorder()
        with recorder:
            out = D.deform_conv2d(*leaves[:4], padding=1, mask=leaves[4])
            out.backward(torch.ones_like(out))
        return len(recorder.ops)

    counts = [count(*c) for c in [(1, 3, 1, 1, 1), (40, 4, 3, 1, 1), (2, 20, 3, 1, 1),
                                  (1, 6, 5, 1, 1), (3, 7, 3, 4, 4), (5, 9, 5, 2, 2)]]
    # a reshape is a view or a copy (2 ops) depending on the shapes, groups and kernel
    assert max(counts) - min(counts) <= 16 and max(counts) < 300, counts


def test_bilinear_op_count_does_not_grow_with_points():
    def count(N, P, H):
        recorder = OpRecorder()
        with recorder:
            D.bilinear_interpolate(rand(N, 3, H, H), rand(N, P), rand(N, P))
        return len(recorder.ops)

    counts = [count(*c) for c in [(1, 1, 2), (16, 500, 30), (3, 7, 5)]]
    assert max(counts) - min(counts) <= 4, counts  # two reshapes: a view, or a copy (2 ops)


# ================================================================ deform_conv2d errors

def test_deform_conv2d_rejects_wrong_offset_and_mask_shapes():
    x, w = torch.zeros(2, 4, 6, 6), torch.zeros(3, 4, 3, 3)
    with pytest.raises(ValueError, match=r"offset has 17 channels, expected a positive multiple "
                                         r"of 2\*KH\*KW = 18"):
        D.deform_conv2d(x, torch.zeros(2, 17, 4, 4), w)
    with pytest.raises(ValueError, match="offset has 0 channels"):
        D.deform_conv2d(x, torch.zeros(2, 0, 4, 4), w)
    with pytest.raises(ValueError, match=r"3 offset groups \(offset has 54 channels\) do not "
                                         r"divide C_in=4"):
        D.deform_conv2d(x, torch.zeros(2, 54, 4, 4), w)
    with pytest.raises(ValueError, match=r"offset must have shape .* = \(2, 18, 4, 4\), got "
                                         r"\(2, 18, 6, 6\)"):
        D.deform_conv2d(x, torch.zeros(2, 18, 6, 6), w)
    with pytest.raises(ValueError, match=r"offset must have shape .* = \(2, 18, 2, 2\)"):
        D.deform_conv2d(x, torch.zeros(2, 18, 4, 4), w, stride=2, padding=0)
    with pytest.raises(ValueError, match=r"offset must have shape .*got \(1, 18, 4, 4\)"):
        D.deform_conv2d(x, torch.zeros(1, 18, 4, 4), w)
    with pytest.raises(ValueError, match=r"mask must have shape .* = \(2, 18, 4, 4\) for G=2 "
                                         r"offset groups, got \(2, 9, 4, 4\)"):
        D.deform_conv2d(x, torch.zeros(2, 36, 4, 4), w, mask=torch.zeros(2, 9, 4, 4))
    with pytest.raises(ValueError, match=r"mask must have shape .*got \(2, 9, 5, 4\)"):
        D.deform_conv2d(x, torch.zeros(2, 18, 4, 4), w, mask=torch.zeros(2, 9, 5, 4))


def test_deform_conv2d_rejects_bad_weight_bias_and_geometry():
    x = torch.zeros(2, 4, 6, 6)
    off = torch.zeros(2, 18, 4, 4)
    with pytest.raises(ValueError, match=r"weight \(3, 3, 3, 3\) does not fit input with C_in=4"):
        D.deform_conv2d(x, off, torch.zeros(3, 3, 3, 3))
    with pytest.raises(ValueError, match=r"weight groups .* dividing C_out=3"):
        D.deform_conv2d(x, off, torch.zeros(3, 2, 3, 3))  # 2 weight groups, 3 outputs
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\), got \(4,\)"):
        D.deform_conv2d(x, off, torch.zeros(3, 4, 3, 3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"kernel spans 7x3 pixels .* larger than the padded input 6x6"):
        D.deform_conv2d(x, torch.zeros(2, 18, 1, 4), torch.zeros(3, 4, 3, 3), dilation=(3, 1))
    for what, value in [("stride", 0), ("dilation", (1, -1)), ("stride", 1.5), ("dilation", True)]:
        with pytest.raises(ValueError, match=f"{what} must be a positive int or a pair"):
            D.deform_conv2d(x, off, torch.zeros(3, 4, 3, 3), **{what: value})
    with pytest.raises(ValueError, match="padding must be a non-negative int or a pair"):
        D.deform_conv2d(x, off, torch.zeros(3, 4, 3, 3), padding=-1)


def test_deform_conv2d_rejects_bad_types():
    x, off, w = torch.zeros(1, 2, 4, 4), torch.zeros(1, 18, 2, 2), torch.zeros(3, 2, 3, 3)
    with pytest.raises(TypeError, match="input must be a floating-point tensor, got torch.int64"):
        D.deform_conv2d(x.long(), off, w)
    with pytest.raises(TypeError, match="offset dtype torch.float64 differs from input dtype"):
        D.deform_conv2d(x, off.double(), w)
    with pytest.raises(TypeError, match="weight dtype torch.float64 differs"):
        D.deform_conv2d(x, off, w.double())
    with pytest.raises(TypeError, match="mask dtype torch.float64 differs"):
        D.deform_conv2d(x, off, w, mask=torch.zeros(1, 9, 2, 2, dtype=DT))
    with pytest.raises(TypeError, match="input must be a torch.Tensor, got list"):
        D.deform_conv2d([[1.0]], off, w)
    with pytest.raises(ValueError, match="input must have 4 dimensions"):
        D.deform_conv2d(torch.zeros(2, 4, 4), off, w)


# ================================================================ DeformConv2d

MODULE_CONFIGS = [  # (C_in, C_out, kernel, stride, padding, dilation, groups, offset_groups)
    (4, 6, 3, 1, 1, 1, 1, 1),
    (4, 8, (3, 2), (2, 1), (1, 0), (1, 2), 2, 4),
    (6, 3, 1, 1, 0, 1, 3, 2),
    (2, 4, 5, 2, 2, 1, 1, 2),
]


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cfg", MODULE_CONFIGS, ids=str)
def test_deform_conv_module_starts_as_a_plain_conv(cfg, bias, modulated):
    C_in, C_out, k, s, p, d, g, G = cfg
    torch.manual_seed(0)
    m = D.DeformConv2d(C_in, C_out, k, s, p, d, groups=g, bias=bias, offset_groups=G,
                       modulated=modulated).double()
    x = rand(2, C_in, 9, 8, seed=70)
    conv = F.conv2d(x, m.weight, None, s, p, d, g)
    scale = 0.5 if modulated else 1.0  # DCNv2: mask = sigmoid(0) = 1/2 at the start
    expected = scale * conv + (0 if m.bias is None else m.bias.view(1, -1, 1, 1))
    close(m(x), expected)


def test_deform_conv_module_mask_is_one_half_at_init():
    m = D.DeformConv2d(4, 3, 3, padding=1, offset_groups=2, modulated=True).double()
    x = rand(2, 4, 5, 5, seed=71)
    predicted = m.conv_offset(x)
    assert predicted.shape == (2, 3 * 2 * 9, 5, 5)
    assert torch.equal(predicted, torch.zeros_like(predicted))
    assert torch.equal(torch.sigmoid(predicted[:, 36:]), torch.full((2, 18, 5, 5), 0.5, dtype=DT))


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("cfg", MODULE_CONFIGS[:2], ids=str)
def test_deform_conv_module_uses_its_predicted_offsets_and_mask(cfg, modulated):
    # with a random offset predictor: the loop port fed with F.conv2d's offsets
    C_in, C_out, k, s, p, d, g, G = cfg
    torch.manual_seed(1)
    m = D.DeformConv2d(C_in, C_out, k, s, p, d, groups=g, offset_groups=G,
                       modulated=modulated).double()
    with torch.no_grad():
        m.conv_offset.weight.normal_(0, 0.3)
        m.conv_offset.bias.normal_(0, 0.5)
    x = rand(1, C_in, 7, 6, seed=72)
    pred = F.conv2d(x, m.conv_offset.weight, m.conv_offset.bias, s, p, d)
    KH, KW = pair(k)
    n = 2 * G * KH * KW
    mask = torch.sigmoid(pred[:, n:]) if modulated else None
    expected = S.deform_conv2d_loop(x, pred[:, :n], m.weight, m.bias, s, p, d, mask)
    close(m(x), expected)


def test_deform_conv_module_parameter_layout():
    m = D.DeformConv2d(8, 16, 3, padding=1, groups=2, offset_groups=4)
    sd = m.state_dict()
    assert list(sd) == ["weight", "bias", "conv_offset.weight", "conv_offset.bias"]
    assert [tuple(v.shape) for v in sd.values()] == [(16, 4, 3, 3), (16,), (72, 8, 3, 3), (72,)]
    v2 = D.DeformConv2d(8, 16, (3, 5), bias=False, offset_groups=2, modulated=True)
    assert list(v2.state_dict()) == ["weight", "conv_offset.weight", "conv_offset.bias"]
    assert v2.bias is None and v2.conv_offset.weight.shape == (3 * 2 * 15, 8, 3, 5)
    assert sum(p.numel() for p in v2.parameters()) == 16 * 8 * 15 + 90 * 8 * 15 + 90
    c = m.conv_offset
    assert (c.kernel_size, c.stride, c.padding, c.dilation) == ((3, 3), (1, 1), (1, 1), (1, 1))
    c = D.DeformConv2d(4, 4, (3, 1), (2, 1), (0, 1), (1, 3)).conv_offset
    assert (c.kernel_size, c.stride, c.padding, c.dilation) == ((3, 1), (2, 1), (0, 1), (1, 3))
    for module in (m, v2):
        assert torch.equal(module.conv_offset.weight, torch.zeros_like(module.conv_offset.weight))
        assert torch.equal(module.conv_offset.bias, torch.zeros_like(module.conv_offset.bias))


def test_deform_conv_module_initialises_weight_and_bias_as_torchvision():
    # torchvision's reset_parameters is nn.Conv2d's: the same draws from the same seed
    torch.manual_seed(5)
    ours = D.DeformConv2d(6, 4, 3, groups=2)
    torch.manual_seed(5)
    ref = nn.Conv2d(6, 4, 3, groups=2)
    assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias, ref.bias)


def test_deform_conv_module_loads_a_torchvision_state_dict():
    torchvision_sd = {"weight": torch.randn(6, 4, 3, 3), "bias": torch.randn(6)}
    m = D.DeformConv2d(4, 6, 3, padding=1)
    result = m.load_state_dict(torchvision_sd, strict=False)
    assert result.missing_keys == ["conv_offset.weight", "conv_offset.bias"]
    assert not result.unexpected_keys and torch.equal(m.weight, torchvision_sd["weight"])


@pytest.mark.parametrize("modulated", [False, True])
def test_deform_conv_module_gradients_reach_the_offset_predictor(modulated):
    torch.manual_seed(2)
    m = D.DeformConv2d(3, 4, 3, padding=1, offset_groups=3, modulated=modulated).double()
    x = rand(2, 3, 6, 6, seed=73)
    plain = m(x).detach()
    m(x).pow(2).sum().backward()
    gw, gb = m.conv_offset.weight.grad, m.conv_offset.bias.grad
    n = 2 * 3 * 9
    assert gw is not None and gb is not None
    assert gw[:n].abs().sum() > 0 and gb[:n].abs().sum() > 0  # offsets learn from step one
    if modulated:
        assert gw[n:].abs().sum() > 0 and gb[n:].abs().sum() > 0
    with torch.no_grad():
        for p in m.parameters():
            p -= 0.01 * p.grad
    assert not torch.allclose(m(x), plain)


def test_deform_conv_module_rejects_bad_arguments():
    with pytest.raises(ValueError, match="groups=3 must divide in_channels=4 and out_channels=6"):
        D.DeformConv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="offset_groups=3 must divide in_channels=4"):
        D.DeformConv2d(4, 6, 3, offset_groups=3)
    with pytest.raises(ValueError, match="in_channels must be a positive int, got 0"):
        D.DeformConv2d(0, 6, 3)
    with pytest.raises(ValueError, match="kernel_size must be a positive int or a pair"):
        D.DeformConv2d(4, 6, 0)
    m = D.DeformConv2d(4, 6, 3)
    with pytest.raises(ValueError, match="DeformConv2d: input has 3 channels, expected 4"):
        m(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"kernel spans 3x3 pixels .*larger than the padded input 2x5"):
        m(torch.randn(1, 4, 2, 5))


# ================================================================ deform_roi_pool

ROI_CASES = [  # (output_size, spatial_scale, sampling_ratio)
    ((2, 2), 1.0, -1), ((3, 3), 1.0, 2), ((1, 4), 0.5, 0), ((3, 2), 0.25, 1), ((2, 3), 1.7, 3),
    (4, 0.5, -1),
]


@pytest.mark.parametrize("case", ROI_CASES, ids=str)
def test_zero_offsets_equal_roi_align(case):
    output_size, scale, sr = case
    PH, PW = pair(output_size)
    x = rand(2, 3, 9, 11, seed=80)
    rois = random_rois(14, 2, 9, 11, seed=81, scale=scale)
    expected = S.roi_align_loop(x, rois, scale, PH, PW, sr)
    for offset in (None, torch.zeros(14, 2, PH, PW, dtype=DT)):
        out = D.deform_roi_pool(x, rois, offset, output_size, scale, sr)
        assert out.shape == (14, 3, PH, PW)
        close(out, expected)


@pytest.mark.parametrize("gamma", [0.1, 0.35])
@pytest.mark.parametrize("case", ROI_CASES[:4], ids=str)
def test_per_bin_offsets_match_the_kernel_loop(case, gamma):
    output_size, scale, sr = case
    PH, PW = pair(output_size)
    x = rand(2, 3, 8, 10, seed=82)
    rois = random_rois(10, 2, 8, 10, seed=83, scale=scale)
    offset = 2 * rand(10, 2, PH, PW, seed=84)  # some bins move off the image
    expected = S.roi_align_loop(x, rois, scale, PH, PW, sr, offset=offset, gamma=gamma)
    close(D.deform_roi_pool(x, rois, offset, output_size, scale, sr, gamma), expected)


@pytest.mark.parametrize("shift", [(1.0, 0.0), (0.0, -2.0), (0.7, 1.3)], ids=str)
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_constant_offset_is_roi_align_of_shifted_boxes(shift, scale):
    # offset channel 0 moves rows by gamma * dy * roi_h, channel 1 columns by gamma * dx * roi_w
    dy, dx = shift
    gamma, (PH, PW) = 0.1, (3, 2)
    x = rand(2, 2, 8, 9, seed=85)
    rois = random_rois(12, 2, 8, 9, seed=86, scale=scale)
    offset = torch.tensor([dy, dx], dtype=DT).view(1, 2, 1, 1).expand(12, 2, PH, PW)
    roi_h = ((rois[:, 4] - rois[:, 2]) * scale).clamp(min=1)
    roi_w = ((rois[:, 3] - rois[:, 1]) * scale).clamp(min=1)
    moved = rois.clone()
    moved[:, [2, 4]] += (gamma * dy * roi_h / scale)[:, None]
    moved[:, [1, 3]] += (gamma * dx * roi_w / scale)[:, None]
    out = D.deform_roi_pool(x, rois, offset.contiguous(), (PH, PW), scale, -1, gamma)
    close(out, S.roi_align_loop(x, moved, scale, PH, PW, -1), tol=1e-9)


def test_roi_pool_of_a_ramp_is_the_ramp_at_the_moved_bin_centres():
    # RoI Align's samples are symmetric about each bin's centre and bilinear
    # interpolation is exact on a ramp, so each bin averages to f(centre).
    H, W = 12, 14
    gy, gx = torch.meshgrid(torch.arange(H, dtype=DT), torch.arange(W, dtype=DT), indexing="ij")
    f = lambda y, x: 0.5 + 2.0 * y - 3.0 * x  # noqa: E731
    x = f(gy, gx).expand(1, 2, H, W)
    rois = torch.tensor([[0, 2.0, 1.0, 10.0, 7.0], [0, 3.5, 2.25, 6.5, 9.75]], dtype=DT)
    PH, PW, gamma = 3, 4, 0.1
    offset = rand(2, 2, PH, PW, seed=87, low=-1.0, high=1.0)
    for sr in (-1, 2):
        out = D.deform_roi_pool(x, rois, offset, (PH, PW), 1.0, sr, gamma)
        for k in range(2):
            x1, y1, x2, y2 = rois[k, 1:].tolist()
            bh, bw = (y2 - y1) / PH, (x2 - x1) / PW
            i, j = torch.arange(PH, dtype=DT)[:, None], torch.arange(PW, dtype=DT)[None]
            cy = y1 + (i + 0.5) * bh + gamma * (y2 - y1) * offset[k, 0]
            cx = x1 + (j + 0.5) * bw + gamma * (x2 - x1) * offset[k, 1]
            close(out[k, 0], f(cy, cx), f"roi {k}, sampling_ratio {sr}")
            close(out[k, 1], out[k, 0])


def test_roi_pool_clamps_near_the_border_unlike_deform_conv():
    # a one-pixel bin centred just outside the top edge reads row 0 at full weight
    x = rand(1, 1, 4, 4, seed=88)
    rois = torch.tensor([[0, 1.0, -1.4, 2.0, -0.4]], dtype=DT)  # sample at (-0.9, 1.5)
    out = D.deform_roi_pool(x, rois, None, 1, 1.0, 1)
    close(out[0, 0, 0, 0], (x[0, 0, 0, 1] + x[0, 0, 0, 2]) / 2)
    rois = torch.tensor([[0, 1.0, -2.6, 2.0, -1.6]], dtype=DT)  # sample at y = -2.1: outside
    assert D.deform_roi_pool(x, rois, None, 1, 1.0, 1).item() == 0.0


@pytest.mark.parametrize("case", ROI_CASES[:3], ids=str)
def test_roi_pool_input_gradient_matches_roi_align_backward(case):
    output_size, scale, sr = case
    PH, PW = pair(output_size)
    x = rand(2, 3, 7, 8, seed=89).requires_grad_()
    rois = random_rois(9, 2, 7, 8, seed=90, scale=scale)
    offset = rand(9, 2, PH, PW, seed=91)
    out = D.deform_roi_pool(x, rois, offset, output_size, scale, sr, 0.2)
    g = rand(*out.shape, seed=92)
    (grad,) = torch.autograd.grad(out, x, g)
    close(grad, S.roi_align_backward_loop(g, x.shape, rois, scale, PH, PW, sr, offset=offset,
                                          gamma=0.2))


@pytest.mark.parametrize("sr", [-1, 2])
def test_roi_pool_gradcheck(sr):
    x = rand(2, 2, 6, 7, seed=93).requires_grad_()
    rois = torch.tensor([[0, 0.3, 0.6, 5.2, 4.1], [1, 1.1, 0.2, 3.3, 5.7], [1, 2.2, 2.4, 2.6, 2.9]],
                        dtype=DT)
    offset = (0.5 * rand(3, 2, 2, 3, seed=94)).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda inp, off: D.deform_roi_pool(inp, rois, off, (2, 3), 1.0, sr, 0.1), (x, offset))


def test_roi_pool_takes_a_list_of_boxes_per_image():
    x = rand(3, 2, 8, 8, seed=95)
    boxes = [random_rois(4, 1, 8, 8, seed=96)[:, 1:], torch.zeros(0, 4, dtype=DT),
             random_rois(2, 1, 8, 8, seed=97)[:, 1:]]
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i), dtype=DT), b], 1)
                      for i, b in enumerate(boxes)])
    offset = rand(6, 2, 2, 2, seed=98)
    close(D.deform_roi_pool(x, boxes, offset, 2), D.deform_roi_pool(x, rois, offset, 2))
    close(D.deform_roi_pool(x, boxes[:1], offset[:4], 2),
          D.deform_roi_pool(x, rois[:4], offset[:4], 2))


def test_roi_pool_empty_boxes():
    x = rand(2, 3, 5, 5, seed=99).requires_grad_()
    for boxes in (torch.zeros(0, 5, dtype=DT), [torch.zeros(0, 4, dtype=DT)], []):
        out = D.deform_roi_pool(x, boxes, None, (2, 3))
        assert out.shape == (0, 3, 2, 3)
    out = D.deform_roi_pool(x, torch.zeros(0, 5, dtype=DT), torch.zeros(0, 2, 2, 3, dtype=DT),
                            (2, 3))
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.zeros_like(x))


def test_roi_pool_float32():
    x = rand(2, 3, 9, 11, seed=100, dtype=torch.float32)
    rois = random_rois(8, 2, 9, 11, seed=101).float()
    offset = rand(8, 2, 3, 3, seed=102, dtype=torch.float32)
    out = D.deform_roi_pool(x, rois, offset, 3, 1.0, -1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), S.roi_align_loop(x.double(), rois.double(), 1.0, 3, 3,
                                                              -1, offset=offset.double()),
                               rtol=1e-5, atol=1e-5)


def test_roi_pool_op_count_does_not_grow_with_rois_or_grid():
    def count(K, box, sr):
        x = rand(2, 3, 20, 20).requires_grad_()
        rois = torch.tensor([[k % 2, 1.0, 2.0, 1.0 + box, 2.0 + box] for k in range(K)], dtype=DT)
        recorder = OpRecorder()
        with recorder:
            D.deform_roi_pool(x, rois, rand(K, 2, 2, 2), 2, 1.0, sr).sum().backward()
        return len(recorder.ops)

    counts = [count(*c) for c in [(1, 2.0, -1), (30, 15.0, -1), (5, 4.0, 4)]]
    assert max(counts) - min(counts) <= 3, counts


def test_roi_pool_rejects_bad_arguments():
    x = torch.zeros(2, 3, 5, 5)
    rois = torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]])
    with pytest.raises(ValueError, match=r"boxes tensor must have shape \(K, 5\), got \(1, 4\): .*pass a list"):
        D.deform_roi_pool(x, rois[:, 1:], None, 2)
    with pytest.raises(ValueError, match=r"boxes\[1\] must be a tensor of shape \(L, 4\)"):
        D.deform_roi_pool(x, [rois[:, 1:], rois], None, 2)
    with pytest.raises(ValueError, match=r"batch index 2.0 is not an integer in \[0, 1\]"):
        D.deform_roi_pool(x, torch.tensor([[2, 0.0, 0.0, 2.0, 2.0]]), None, 2)
    with pytest.raises(ValueError, match=r"batch index 0.5 is not an integer"):
        D.deform_roi_pool(x, torch.tensor([[0.5, 0.0, 0.0, 2.0, 2.0]]), None, 2)
    with pytest.raises(ValueError, match=r"batch index 2.0 is not an integer in \[0, 1\] \(input has N=2"):
        D.deform_roi_pool(x, [rois[:, 1:]] * 3, None, 2)
    with pytest.raises(TypeError, match="boxes dtype torch.float64 differs"):
        D.deform_roi_pool(x, rois.double(), None, 2)
    with pytest.raises(ValueError, match=r"offset must have shape \(K, 2, PH, PW\) = \(1, 2, 2, 3\), "
                                         r"got \(1, 2, 3, 2\)"):
        D.deform_roi_pool(x, rois, torch.zeros(1, 2, 3, 2), (2, 3))
    with pytest.raises(ValueError, match="output_size must be a positive int or a pair"):
        D.deform_roi_pool(x, rois, None, 0)
    for scale in (0, float("inf")):
        with pytest.raises(ValueError, match="spatial_scale must be a positive finite number"):
            D.deform_roi_pool(x, rois, None, 2, spatial_scale=scale)
        with pytest.raises(ValueError, match="DeformRoIPool: spatial_scale must be a positive"):
            D.DeformRoIPool(2, 3, spatial_scale=scale)
    for ratio in (1.5, True):
        with pytest.raises(ValueError, match="sampling_ratio must be an int"):
            D.deform_roi_pool(x, rois, None, 2, sampling_ratio=ratio)
        with pytest.raises(ValueError, match="DeformRoIPool: sampling_ratio must be an int"):
            D.DeformRoIPool(2, 3, sampling_ratio=ratio)
    with pytest.raises(ValueError, match=r"input must have H, W >= 1, got \(2, 3, 0, 5\)"):
        D.deform_roi_pool(torch.zeros(2, 3, 0, 5), rois, None, 2)


# ================================================================ DeformRoIPool

def test_deform_roi_pool_module_layout_and_zero_last_layer():
    m = D.DeformRoIPool((3, 2), 5, hidden_channels=16)
    sd = m.state_dict()
    assert list(sd) == [f"offset_fc.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    assert [tuple(v.shape) for v in sd.values()] == \
        [(16, 30), (16,), (16, 16), (16,), (12, 16), (12,)]
    assert isinstance(m.offset_fc[1], nn.ReLU) and isinstance(m.offset_fc[3], nn.ReLU)
    assert not m.offset_fc[-1].weight.any() and not m.offset_fc[-1].bias.any()
    assert sum(p.numel() for p in D.DeformRoIPool(7, 256).parameters()) == \
        (7 * 7 * 256 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 98 + 98)


def test_deform_roi_pool_module_starts_as_roi_align_and_learns_offsets():
    torch.manual_seed(3)
    m = D.DeformRoIPool((2, 3), 3, spatial_scale=0.5, sampling_ratio=2, hidden_channels=8).double()
    x = rand(2, 3, 8, 9, seed=103)
    rois = random_rois(5, 2, 8, 9, seed=104, scale=0.5)
    out = m(x, rois)
    close(out, S.roi_align_loop(x, rois, 0.5, 2, 3, 2))
    out.pow(2).sum().backward()
    assert m.offset_fc[-1].weight.grad.abs().sum() > 0  # the offsets learn from step one
    with torch.no_grad():
        m.offset_fc[-1].weight.normal_(0, 0.5)
        m.offset_fc[-1].bias.normal_(0, 0.5)
        plain = S.roi_align_loop(x, rois, 0.5, 2, 3, 2)
        offset = m.offset_fc(plain.flatten(1)).view(5, 2, 2, 3)  # channel 0 dy, 1 dx
        expected = S.roi_align_loop(x, rois, 0.5, 2, 3, 2, offset=offset, gamma=0.1)
        close(m(x, rois), expected)
        boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
        order = torch.argsort(rois[:, 0], stable=True)
        close(m(x, boxes), expected[order])


def test_deform_roi_pool_module_rejects_bad_input():
    m = D.DeformRoIPool(2, 3, hidden_channels=4)
    with pytest.raises(ValueError, match="DeformRoIPool: input has 4 channels, expected 3"):
        m(torch.zeros(1, 4, 5, 5), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="channels must be a positive int"):
        D.DeformRoIPool(2, 0)


# ================================================================ benchmark smoke test

def test_bench_quick_runs_and_prints_a_ratio_per_row():
    rows, stdout = quick_rows("bench/deformable.py")
    for row in [("vs_ort", "fwd"), ("vs_conv2d", "fwd"), ("vs_conv2d", "fwd+bwd"),
                ("vs_tap_loop", "fwd"), ("vs_tap_loop", "fwd+bwd"), ("vs_python_loop", "fwd")]:
        assert row in rows, f"no {row} row in:\n{stdout}"
        ours_ms, other_ms, ratio, rel_diff = rows[row]
        assert printed_ratio(ratio, ours_ms, other_ms), row
        assert rel_diff < 1e-4, f"the two implementations disagree: {row}"


# ---------------------------------------------------------------- the exercise's oracle

def test_the_hidden_tests_oracle_agrees_with_the_torchvision_ports():
    """autograder/oracles/deformable.py judges submissions: it must match the kernel ports."""
    torch.manual_seed(3)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    weight = torch.randn(6, 2, 3, 2, dtype=torch.float64)
    offset = torch.randn(2, 2 * 2 * 6, 4, 2, dtype=torch.float64) * 1.5
    mask = torch.rand(2, 2 * 6, 4, 2, dtype=torch.float64)
    torch.testing.assert_close(
        O.tap_loop_deform_conv2d(x, offset, weight, None, (2, 2), (1, 0), (1, 2), mask),
        S.deform_conv2d_loop(x, offset, weight, None, (2, 2), (1, 0), (1, 2), mask))
    rois = torch.tensor([[0, 1.0, 1.0, 5.0, 6.0], [1, -2.0, 3.0, 4.5, 9.0],
                         [1, 2.2, 2.1, 2.4, 2.3]], dtype=torch.float64)
    bins = torch.randn(3, 2, 2, 3, dtype=torch.float64)
    for ratio in (2, -1):
        torch.testing.assert_close(
            O.loop_deform_roi_pool(x, rois, bins, (2, 3), 0.7, ratio, 0.2),
            S.roi_align_loop(x, rois, 0.7, 2, 3, ratio, offset=bins, gamma=0.2))


# ================================================================ the grader's probes

class KernelPortDeformConv2d(torch.autograd.Function):
    """deform_conv2d by the loop ports of torchvision's forward and backward kernels."""

    @staticmethod
    def forward(ctx, input, offset, weight, bias, mask, stride, padding, dilation):
        ctx.save_for_backward(input, offset, weight, mask)
        ctx.conv, ctx.has_bias = (stride, padding, dilation), bias is not None
        return S.deform_conv2d_loop(input, offset, weight, bias, stride, padding, dilation,
                                    mask).to(input.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        input, offset, weight, mask = ctx.saved_tensors
        grads = S.deform_conv2d_backward_loop(grad_out, input, offset, weight, *ctx.conv, mask)
        gi, goff, gm, gw, gb = (None if g is None else g.to(input.dtype) for g in grads)
        return gi, goff, gw, gb if ctx.has_bias else None, gm, None, None, None


def kernel_port_deform_conv2d(input, offset, weight, bias=None, stride=1, padding=0, dilation=1,
                              mask=None):
    return KernelPortDeformConv2d.apply(input, offset, weight, bias, mask, stride, padding,
                                        dilation)


class PackedDeformConv2d(nn.Module):
    """torchvision's DeformConv2d parameters fed by an offset-predicting nn.Conv2d, zero at
    first (mmcv's DeformConv2dPack / ModulatedDeformConv2dPack); its forward calls the
    ``deform_conv2d`` that the probe binds."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, offset_groups=1, modulated=False):
        super().__init__()
        KH, KW = pair(kernel_size)
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels // groups, KH, KW))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.taps = offset_groups * KH * KW
        self.conv_offset = nn.Conv2d(in_channels, (3 if modulated else 2) * self.taps, kernel_size,
                                     stride, padding, dilation)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        self.conv = (stride, padding, dilation)

    def forward(self, x):
        predicted = self.conv_offset(x)
        offset, mask = predicted[:, :2 * self.taps], predicted[:, 2 * self.taps:]
        mask = mask.sigmoid() if mask.shape[1] else None
        return deform_conv2d(x, offset, self.weight, self.bias, *self.conv, mask)  # noqa: F821


def loop_deform_roi_pool(input, boxes, *args):
    if not isinstance(boxes, torch.Tensor):
        boxes = tv_convert_boxes_to_roi_format(boxes)
    return O.loop_deform_roi_pool(input, boxes, *args)


COUNTERPARTS = dict(bilinear_interpolate=O.grid_bilinear, deform_conv2d=kernel_port_deform_conv2d,
                    DeformConv2d=PackedDeformConv2d, deform_roi_pool=loop_deform_roi_pool)


@pytest.mark.parametrize("probe, seed", probe_cases("deformable"))
def test_probe_agrees_with_independent_ops(probe, seed):
    check_probe(probe, seed, D, COUNTERPARTS)


# -- the chapter's page and its classic mistakes --------------------------------

@pytest.mark.xdist_group("book")  # reads the session's one build of the book
def test_page_ran_its_experiments(html):
    page = (html / "book/deformable.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 4, "figures drawn by code are missing"
    text = visible_text(page)
    runs = {name: [float(v) for v in values] for name, *values in re.findall(
        r"^(plain|plain, width \d+|deformable)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$",
        text, re.M)}
    assert len(runs) == 3 and "deformable" in runs, "the accuracy table is missing"
    deformable = runs.pop("deformable")
    plain, wide = runs.pop("plain"), runs.popitem()[1]
    assert min(deformable[:3]) > max(plain[:3] + wide[:3]), \
        "the prose claims every deformable run beats every plain run"
    assert deformable[3] - max(plain[3], wide[3]) >= 3, "the prose claims a gap of several points"
    assert 0 < wide[3] - plain[3] < deformable[3] - wide[3], \
        "the prose claims width helps the plain net, but much less than deformable layers"
    assert deformable[4] / plain[4] >= 2, "the prose claims the deformable net costs several times as long"
    ink = {name: (float(a), float(b)) for name, a, b in re.findall(
        r"^(regular grid|learned, image average|learned, per image)\s+([\d.]+)\s+([\d.]+)$", text, re.M)}
    assert len(ink) == 3, "the sampling-pattern table is missing"
    regular, average, per_image = ink["regular grid"], ink["learned, image average"], ink["learned, per image"]
    assert 1.5 <= per_image[0] / regular[0] <= 2.5, "the prose claims about twice the ink of the grid"
    assert abs(average[0] - per_image[0]) <= 0.15 * per_image[0], \
        "the prose claims the image-averaged pattern reads about as much ink"
    assert per_image[1] - average[1] >= 15 and regular[1] <= 20, \
        "the prose claims the net needs its per-image offsets, and fails on the regular grid"
    spread = {name: [float(v) for v in values] for name, *values in re.findall(
        r"^(smallest third|largest third)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", text, re.M)}
    assert len(spread) == 2, "the spread table is missing"
    small, large = spread["smallest third"], spread["largest third"]
    scale = large[0] / small[0]
    assert 1.3 <= scale <= 1.5 and abs(large[1] / small[1] - 1) < (scale - 1) / 2, \
        "the prose claims digits 1.4 times larger get nearly the same spread"
    assert min(small[1], large[1]) > 1.3 * small[2], "the prose claims a much wider spread than the grid"
    for term in ["可变形卷积", "偏移", "双线性插值", "调制"]:
        assert term in page


def test_page_states_the_papers_layer_counts_and_learning_rates():
    text = prose("deformable")
    saturation = r"saturated at three deformable layers for DeepLab and at six for the detectors"
    assert sentences_with(text, saturation), \
        "DCN v1 (Table 1): gains saturate at 3 deformable layers for DeepLab, at 6 for the detectors"
    counts = r"(\d+) layers by the paper's count \(a standard ResNet-50 has (\d+) \$3 \\times 3\$ convolutions"
    stated = re.search(counts, text)
    assert stated and stated[1] == "12", "DCN v2 counts 12 deformable layers in conv3 to conv5"
    model = resnet.resnet50()
    convs = [m for stage in (model.layer2, model.layer3, model.layer4) for m in stage.modules()
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert int(stated[2]) == len(convs), f"ResNet-50 has {len(convs)} 3x3 convolutions in conv3 to conv5"
    rate = sentences_with(text, r"0\.1 times the learning rate")
    assert rate and all("convolutional" in s for s in rate), "DCN v2's 0.1x rate is for the added conv layers"
    assert sentences_with(text, r"fully connected layers, and those keep the normal learning rate"), \
        "DCN v2 (section 3.2): the fc layers of modulated deformable RoI pooling keep the normal rate"
    warp = sentences_with(text, r"spatial transformer network")
    assert warp and any("affine, projective or a thin-plate spline" in s for s in warp) \
        and not any("one affine transformation" in s for s in warp), \
        "a spatial transformer predicts a parametric warp: affine, projective or thin-plate spline"


GRID_SAMPLE_BILINEAR = """\
    N, C, H, W = input.shape
    grid = torch.stack([2 * x / (W - 1) - 1, 2 * y / (H - 1) - 1], -1).reshape(N, -1, 1, 2)
    sampled = torch.nn.functional.grid_sample(input, grid, align_corners=True)
    return sampled.reshape(N, C, *y.shape[1:])
"""

MISTAKES = [
    Mistake("dy_dx_swapped",
            {"deform_conv2d": edit("y = (base_y + off[..., 0])", "y = (base_y + off[..., 1])",
                                   "x = (base_x + off[..., 1])", "x = (base_x + off[..., 0])")},
            {"deform_conv2d"}, "you swapped dy and dx"),
    Mistake("mask_sigmoid_twice",
            {"deform_conv2d": edit("cols * mask.reshape(", "cols * mask.sigmoid().reshape(")},
            {"deform_conv2d"}, "the mask is used as given"),
    Mistake("unnormalised_bin_offsets",
            {"deform_roi_pool": edit("v(gamma * roi_h) * dy", "dy", "v(gamma * roi_w) * dx", "dx")},
            {"deform_roi_pool"}, "the offsets are normalised"),
    Mistake("calls_grid_sample",
            {"bilinear_interpolate": edit("    ### BEGIN SOLUTION\n", GRID_SAMPLE_BILINEAR)},
            {"bilinear_interpolate"}, "calls torch.nn.functional.grid_sample"),
]
