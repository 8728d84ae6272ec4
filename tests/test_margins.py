"""Tests of the reference code in solutions/margins.py.

Oracles: per-entry loops written from the papers' formulas with angles through acos
(autograder/oracles/margins_loops.py, differentiable), a port of InsightFace's
CombinedMarginLoss (the code the reference ports), a brute-force TAR at FAR that tries
every threshold, F.normalize and F.cross_entropy as peers, torch.autograd.gradcheck,
and small cases worked by hand below.
"""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from autograder.oracles import margins_loops as O
from solutions import margins as M
from tests.helpers import Mistake, OpRecorder, check_probe, close, edit, probe_cases, rand

DT = torch.float64
EMPTY = inspect.Parameter.empty

# (s, m1, m2, m3): ArcFace, CosFace, AM-Softmax, the combined margins of the ArcFace paper,
# a large angular margin, SphereFace and a fractional m1
CONFIGS = [(64.0, 1.0, 0.5, 0.0), (64.0, 1.0, 0.0, 0.35), (30.0, 1.0, 0.0, 0.35), (10.0, 1.0, 0.3, 0.2),
           (64.0, 1.0, 1.2, 0.0), (16.0, 4.0, 0.0, 0.0), (8.0, 0.9, 0.4, 0.15), (4.0, 2.0, 0.3, 0.0)]


def cosines(N, K, seed=0, dtype=DT):
    """(N, K) cosines and targets; the targets of rows 0-3 are 1, -1, -0.999 (past pi for
    every m2 > 0.05) and -0.9 (past pi for m2 > 0.45), another row holds a 1 off target."""
    g = torch.Generator().manual_seed(seed)
    cos = torch.rand(N, K, generator=g, dtype=DT) * 2 - 1
    y = torch.randint(0, K, (N,), generator=g)
    cos[torch.arange(4), y[:4]] = torch.tensor([1.0, -1.0, -0.999, -0.9], dtype=DT)
    cos[4, (y[4] + 1) % K] = 1.0
    return cos.to(dtype), y


# ================================================================ signatures and errors

@pytest.mark.parametrize("fn,expected", [
    (M.normalized_logits, [("features", EMPTY), ("weight", EMPTY)]),
    (M.margin_logits, [("cosine", EMPTY), ("target", EMPTY), ("s", 64.0), ("m1", 1.0), ("m2", 0.0), ("m3", 0.0)]),
    (M.margin_loss, [("cosine", EMPTY), ("target", EMPTY), ("s", 64.0), ("m1", 1.0), ("m2", 0.0), ("m3", 0.0)]),
    (M.MarginHead.__init__, [("self", EMPTY), ("in_features", EMPTY), ("num_classes", EMPTY), ("s", 64.0),
                             ("m1", 1.0), ("m2", 0.0), ("m3", 0.0)]),
    (M.tar_at_far, [("scores", EMPTY), ("labels", EMPTY), ("far", EMPTY)]),
])
def test_signatures(fn, expected):
    assert [(p.name, p.default) for p in inspect.signature(fn).parameters.values()] == expected


@pytest.mark.parametrize("args,error,match", [
    ((torch.randn(3), torch.randn(4, 3)), ValueError, r"features must have shape \(N, D\)"),
    ((torch.randn(2, 3), torch.randn(4, 5)), ValueError, "D=3 dimensions, the class weights D=5"),
    ((torch.randn(2, 3), torch.randn(4, 3, dtype=DT)), TypeError, "weight dtype"),
    ((torch.ones(2, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long)), TypeError, "floating-point"),
])
def test_normalized_logits_rejects_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        M.normalized_logits(*args)


GOOD = torch.tensor([[0.5, -0.2], [0.1, 0.9]], dtype=DT)


@pytest.mark.parametrize("fn", [M.margin_logits, M.margin_loss])
@pytest.mark.parametrize("cosine,target,kwargs,error,match", [
    (GOOD, torch.tensor([0, 2]), {}, ValueError, r"class indices in \[0, 1\]"),
    (GOOD, torch.tensor([-1, 0]), {}, ValueError, r"class indices in \[0, 1\]"),
    (GOOD, torch.tensor([0.0, 1.0]), {}, TypeError, "int64 tensor of shape"),
    (GOOD, [0, 1], {}, TypeError, "int64 tensor of shape"),
    (GOOD, torch.tensor([0, 1, 1]), {}, ValueError, "3 labels for 2 rows"),
    (GOOD[0], torch.tensor([0]), {}, ValueError, r"shape \(N, K\)"),
    (GOOD * 3, torch.tensor([0, 1]), {}, ValueError, "normalise the features and the class weights"),
    (GOOD * math.nan, torch.tensor([0, 1]), {}, ValueError, "must hold cosines"),
    (GOOD, torch.tensor([0, 1]), dict(m2=-0.5), ValueError, r"m2 must lie in \[0, pi\)"),
    (GOOD, torch.tensor([0, 1]), dict(m2=math.pi), ValueError, r"m2 must lie in \[0, pi\)"),
    (GOOD, torch.tensor([0, 1]), dict(m3=-0.35), ValueError, "m3 must be non-negative"),
    (GOOD, torch.tensor([0, 1]), dict(m1=0.0), ValueError, "m1 must be positive"),
    (GOOD, torch.tensor([0, 1]), dict(s=0.0), ValueError, "scale s must be positive"),
    (GOOD, torch.tensor([0, 1]), dict(s=True), ValueError, "s must be a finite number"),
    (GOOD, torch.tensor([0, 1]), dict(m2=math.inf), ValueError, "m2 must be a finite number"),
])
def test_margins_reject_bad_arguments(fn, cosine, target, kwargs, error, match):
    with pytest.raises(error, match=match):
        fn(cosine, target, **kwargs)


def test_margin_loss_rejects_an_empty_batch_and_margin_logits_takes_it():
    empty = torch.zeros(0, 3, dtype=DT)
    assert M.margin_logits(empty, torch.zeros(0, dtype=torch.long), m2=0.5).shape == (0, 3)
    with pytest.raises(ValueError, match="empty batch"):
        M.margin_loss(empty, torch.zeros(0, dtype=torch.long))


def test_cosines_rounded_past_one_are_accepted():
    """Normalised float32 features can give a cosine an ulp above 1."""
    above = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    out = M.margin_logits(torch.stack([above, -above])[None], torch.tensor([0]), 1.0, m2=0.5)
    assert torch.isfinite(out).all()
    close(out[0, 0], torch.tensor(math.cos(0.5)), "an ulp above 1 is a cosine of 1", tol=1e-6)


# ================================================================ normalized_logits

@pytest.mark.parametrize("dtype", [DT, torch.float32])
@pytest.mark.parametrize("N,D,K", [(1, 2, 1), (5, 3, 7), (8, 16, 4)])
def test_normalized_logits_match_loops_and_f_normalize(N, D, K, dtype):
    x, w = rand(N, D, seed=N, dtype=dtype) * 3, rand(K, D, seed=K + 10, dtype=dtype) * 0.01
    got = M.normalized_logits(x, w)
    assert got.dtype == dtype and got.shape == (N, K)
    tol = 1e-12 if dtype == DT else 1e-6
    close(got, O.loop_normalized_logits(x, w), "against the loops", tol=tol)
    close(got, F.normalize(x) @ F.normalize(w).T, "against F.normalize", tol=tol)


def test_normalized_logits_by_hand():
    """(3, 4) and (0, 2) against (2, 0), (0, -5), (1, 1): cosines 3/5, -4/5, 7/(5 sqrt 2); 0, -1, 1/sqrt 2."""
    got = M.normalized_logits(torch.tensor([[3.0, 4.0], [0.0, 2.0]], dtype=DT),
                              torch.tensor([[2.0, 0.0], [0.0, -5.0], [1.0, 1.0]], dtype=DT))
    r = math.sqrt(2)
    close(got, torch.tensor([[0.6, -0.8, 7 / (5 * r)], [0.0, -1.0, 1 / r]], dtype=DT), tol=1e-15)


def test_normalized_logits_of_a_zero_vector_are_zero_with_a_finite_gradient():
    x = torch.zeros(1, 3, dtype=DT, requires_grad=True)
    w = rand(4, 3, seed=1).requires_grad_()
    out = M.normalized_logits(x, w)
    assert (out == 0).all()
    grads = torch.autograd.grad(out.sum(), (x, w))
    assert all(torch.isfinite(g).all() for g in grads)


def test_normalized_logits_gradcheck():
    x, w = rand(4, 5, seed=2).requires_grad_(), rand(3, 5, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(M.normalized_logits, (x, w))


# ================================================================ margin_logits

@pytest.mark.parametrize("dtype", [DT, torch.float32])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_margin_logits_match_the_loops(config, dtype):
    """Random cosines with +-1 and angles past pi - m2 among the targets."""
    cos, y = cosines(9, 6, seed=int(config[0]), dtype=dtype)
    got = M.margin_logits(cos, y, *config)
    assert got.dtype == dtype
    close(got, O.loop_margin_logits(cos, y, *config), "against the loops",
          tol=1e-12 * config[0] if dtype == DT else 1e-6 * config[0])


@pytest.mark.parametrize("config", [c for c in CONFIGS if c[1] == 1 and (c[2] == 0 or c[3] == 0)], ids=str)
def test_margin_logits_match_insightface(config):
    """InsightFace's CombinedMarginLoss (ArcFace or CosFace), cosines of +-1 included."""
    cos, y = cosines(9, 6, seed=3)
    if config[3] == 0 and config[2] == 0:
        pytest.skip("InsightFace raises for no margin")
    close(M.margin_logits(cos, y, *config), O.insightface_combined_margin(cos.clone(), y, *config), tol=1e-12)


def test_margin_logits_leave_the_cosines_untouched():
    """InsightFace's forward writes into its input; the reference must not."""
    cos, y = cosines(6, 4)
    before = cos.clone()
    M.margin_logits(cos, y, 64.0, m2=0.5)
    assert torch.equal(cos, before)


def test_cosface_by_hand():
    """s = 30, m3 = 0.35: the target cosine 0.5 gives 30 * 0.15 = 4.5; the others 30 * cos."""
    cos = torch.tensor([[0.5, 0.2, -0.1]], dtype=DT)
    close(M.margin_logits(cos, torch.tensor([0]), 30.0, m3=0.35), torch.tensor([[4.5, 6.0, -3.0]], dtype=DT),
          tol=1e-13)


def test_arcface_by_hand():
    """theta = pi/3 plus m2 = pi/6 is pi/2: the target logit is 0. theta = arccos(-0.9) = 2.69
    plus m2 = 0.5 passes pi: the fallback cos - m2 sin m2 = -0.9 - 0.5 * 0.4794 = -1.1397."""
    cos = torch.tensor([[0.5, 0.25], [-0.9, 0.25]], dtype=DT)
    got = M.margin_logits(cos, torch.tensor([0, 0]), 2.0, m2=math.pi / 6)
    close(got[0], torch.tensor([0.0, 0.5], dtype=DT), "pi/3 + pi/6", tol=1e-15)
    got = M.margin_logits(cos, torch.tensor([0, 0]), 2.0, m2=0.5)
    close(got[1, 0], torch.tensor(2 * (-0.9 - 0.5 * 0.479425538604203), dtype=DT), "the fallback", tol=1e-13)
    # with m2 = 0.4 the same target stays below pi: 2.6906 + 0.4 = 3.0906
    close(M.margin_logits(cos, torch.tensor([0, 0]), 2.0, m2=0.4)[1, 0],
          torch.tensor(2 * math.cos(math.acos(-0.9) + 0.4), dtype=DT), "just below pi", tol=1e-13)


def test_sphereface_by_hand():
    """m1 = 4: theta = pi/8 -> cos(pi/2) = 0; theta = 3pi/8 -> phi = 3pi/2, k = 1:
    -cos(3pi/2) - 2 = -2; theta = pi -> phi = 4pi, k = 4: cos(4pi) - 8 = -7."""
    angles = torch.tensor([math.pi / 8, 3 * math.pi / 8, math.pi], dtype=DT)
    got = M.margin_logits(torch.cos(angles)[:, None], torch.zeros(3, dtype=torch.long), 1.0, m1=4.0)
    close(got[:, 0], torch.tensor([0.0, -2.0, -7.0], dtype=DT), tol=1e-12)


def test_sphereface_psi_is_cos_until_pi_then_continuous_and_decreasing():
    theta = torch.linspace(0, math.pi, 4001, dtype=DT)
    for m1, m2 in [(4.0, 0.0), (2.0, 0.3), (0.9, 0.4), (1.35, 0.0)]:
        psi = M.sphereface_psi(torch.cos(theta), m1, m2)
        phi = m1 * theta + m2
        close(psi[phi <= math.pi], torch.cos(phi[phi <= math.pi]), f"m1={m1}: cos(phi) until pi", tol=1e-12)
        steps = psi[1:] - psi[:-1]
        assert (steps <= 1e-12).all(), f"m1={m1}, m2={m2}: psi rises"
        assert steps.abs().max() < 0.01, f"m1={m1}, m2={m2}: psi jumps"


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_target_logit_decreases_with_the_angle(config):
    """The point of the fallback and of psi: a larger angle never scores higher."""
    sweep = torch.cos(torch.linspace(0, math.pi, 2001, dtype=DT))[:, None]
    target = M.margin_logits(sweep, torch.zeros(2001, dtype=torch.long), *config)[:, 0]
    assert (target[1:] <= target[:-1] + 1e-12).all()


def test_without_the_fallback_the_arcface_logit_would_rise():
    """Why the fallback exists: cos(theta + m2) past pi rises with theta."""
    theta = torch.tensor([math.pi - 0.3, math.pi - 0.1], dtype=DT)
    assert math.cos(theta[1] + 0.5) > math.cos(theta[0] + 0.5)
    got = M.margin_logits(torch.cos(theta)[:, None], torch.zeros(2, dtype=torch.long), 1.0, m2=0.5)[:, 0]
    assert got[1] < got[0]


def test_margin_goes_on_the_target_only_and_no_margin_is_scaled_cosine():
    cos, y = cosines(7, 5, seed=4)
    for config in CONFIGS:
        out = M.margin_logits(cos, y, *config)
        off = torch.ones_like(cos, dtype=torch.bool)
        off[torch.arange(7), y] = False
        close(out[off], config[0] * cos[off], f"{config}: the other classes", tol=1e-12)
    close(M.margin_logits(cos, y, 3.0), 3.0 * cos, "no margin", tol=1e-15)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_margin_logits_gradcheck_and_finite_gradients_at_the_poles(config):
    cos, y = cosines(6, 4, seed=5)
    inner = cos.clamp(-0.995, 0.995).requires_grad_()
    assert torch.autograd.gradcheck(lambda c: M.margin_logits(c, y, *config), (inner,))
    cos.requires_grad_()
    grad, = torch.autograd.grad(M.margin_logits(cos, y, *config).sum(), cos)
    assert torch.isfinite(grad).all()


def test_margin_logits_gradient_against_the_loops_and_the_derivative():
    """Inside (-1, 1) autograd through the angle loops agrees; d/dc cos(acos c + m) is
    cos m + sin m * c / sqrt(1 - c^2)."""
    cos, y = cosines(8, 5, seed=6)
    cos = cos.clamp(-0.99, 0.99).requires_grad_()
    for config in CONFIGS:
        g_ref, = torch.autograd.grad(M.margin_logits(cos, y, *config).sum(), cos)
        g_loop, = torch.autograd.grad(O.loop_margin_logits(cos, y, *config).sum(), cos)
        close(g_ref, g_loop, f"{config}", tol=1e-9)
    c = torch.tensor([[0.3, -0.6, 0.95]], dtype=DT, requires_grad=True)
    for j, v in enumerate([0.3, -0.6, 0.95]):
        grad, = torch.autograd.grad(M.margin_logits(c, torch.tensor([j]), 1.0, m2=0.5)[0, j], c)
        close(grad[0, j], torch.tensor(math.cos(0.5) + math.sin(0.5) * v / math.sqrt(1 - v * v), dtype=DT),
              f"at {v}", tol=1e-12)


def test_gradient_at_the_poles_follows_the_documented_convention():
    """At cos = 1 the sine contributes none: d/dc = s cos(m2). At cos = -1 (the fallback) it is s."""
    c = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=DT, requires_grad=True)
    grad, = torch.autograd.grad(M.margin_logits(c, torch.tensor([0, 0]), 2.0, m2=0.5).sum(), c)
    close(grad, torch.tensor([[2 * math.cos(0.5), 2.0], [2.0, 2.0]], dtype=DT), tol=1e-15)


# ================================================================ margin_loss and MarginHead

@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_margin_loss_matches_the_loops_and_cross_entropy(config):
    cos, y = cosines(9, 6, seed=7)
    loss = M.margin_loss(cos, y, *config)
    assert loss.shape == () and loss.dtype == DT
    close(loss, O.loop_margin_loss(cos, y, *config), "against the loops", tol=1e-12 * config[0])
    close(loss, F.cross_entropy(M.margin_logits(cos, y, *config), y), "against F.cross_entropy", tol=1e-12)
    inner = cos.detach().clamp(-0.99, 0.99).requires_grad_()  # at +-1 the two differ by convention
    got, = torch.autograd.grad(M.margin_loss(inner, y, *config), inner)
    want, = torch.autograd.grad(O.loop_margin_loss(inner, y, *config), inner)
    close(got, want, "the gradient", tol=1e-10)


def test_margin_loss_by_hand():
    """s = 2, m3 = 0.5. Row 0: cosines (0.5, 0.5, 0), target 0: logits (0, 1, 0), loss
    log(2 + e). Row 1: (0.25, -0.25, 0), target 1: logits (0.5, -1.5, 0), loss
    log(e^0.5 + e^-1.5 + 1) + 1.5. The loss is their mean."""
    cos = torch.tensor([[0.5, 0.5, 0.0], [0.25, -0.25, 0.0]], dtype=DT)
    first = math.log(2 + math.e)
    second = math.log(math.exp(0.5) + math.exp(-1.5) + 1) + 1.5
    close(M.margin_loss(cos, torch.tensor([0, 1]), 2.0, m3=0.5), torch.tensor((first + second) / 2, dtype=DT),
          tol=1e-15)


def test_margin_loss_is_finite_at_any_scale():
    """s = 1000: exp(1000) overflows float64, the loss (2000 + 0) / 2 does not."""
    cos = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=DT)
    close(M.margin_loss(cos, torch.tensor([1, 1]), 1000.0), torch.tensor(1000.0, dtype=DT), tol=1e-12)


def test_margin_loss_float32():
    cos, y = cosines(9, 6, seed=8, dtype=torch.float32)
    loss = M.margin_loss(cos, y, 64.0, m2=0.5)
    assert loss.dtype == torch.float32
    close(loss, O.loop_margin_loss(cos, y, 64.0, m2=0.5), tol=1e-4)


def test_margin_head():
    torch.manual_seed(0)
    head = M.MarginHead(16, 1000, m2=0.5)
    assert head.weight.shape == (1000, 16) and isinstance(head.weight, torch.nn.Parameter)
    assert 0.009 < head.weight.std().item() < 0.011 and abs(head.weight.mean().item()) < 1e-3
    assert repr(head) == "MarginHead(in_features=16, num_classes=1000, s=64.0, m1=1.0, m2=0.5, m3=0.0)"
    x, y = torch.randn(5, 16), torch.randint(0, 1000, (5,))
    close(head(x, y), M.margin_loss(M.normalized_logits(x, head.weight), y, 64.0, 1.0, 0.5, 0.0), tol=1e-6)


def test_margin_head_learns_a_separable_problem():
    """Four classes along the axes of R^4: a few SGD steps on the weights bring the loss down."""
    torch.manual_seed(0)
    head = M.MarginHead(4, 4, s=16.0, m3=0.2).double()
    x = torch.eye(4, dtype=DT).repeat(3, 1) + 0.1 * rand(12, 4, seed=9)
    y = torch.arange(4).repeat(3)
    opt = torch.optim.SGD(head.parameters(), lr=0.05)
    first = head(x, y).item()
    for _ in range(30):
        opt.zero_grad()
        loss = head(x, y)
        loss.backward()
        opt.step()
    assert loss.item() < first / 4


@pytest.mark.parametrize("args,match", [
    ((0, 10), "in_features must be a positive int"), ((4, 2.0), "num_classes must be a positive int"),
    ((4, 10, 64.0, 1.0, -0.5), "m2 must lie"),
])
def test_margin_head_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        M.MarginHead(*args)


# ================================================================ tar_at_far

def test_tar_at_far_by_hand():
    """Scores 0.9 .. 0.4, genuine at 0.9, 0.7, 0.5, impostors 0.8, 0.6, 0.4. far=0.5 lets
    k = 1 of 3 impostors in: t = 0.6, TAR = 2/3; far=0: t = 0.8, TAR = 1/3; far=1: every pair."""
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], dtype=DT)
    labels = torch.tensor([True, False, True, False, True, False])
    for far, tar, threshold in [(0.5, 2 / 3, 0.6), (0.0, 1 / 3, 0.8), (1 / 3, 2 / 3, 0.6), (0.34, 2 / 3, 0.6),
                                (0.66, 2 / 3, 0.6), (2 / 3, 1.0, 0.4), (1.0, 1.0, -math.inf)]:
        got_tar, got_threshold = M.tar_at_far(scores, labels, far)
        assert got_threshold.item() == threshold and abs(got_tar.item() - tar) < 1e-15, far


def test_tar_at_far_rejects_ties_at_the_threshold():
    """Impostors 0.7, 0.5, 0.5, 0.2, far = 0.25: t = 0.5; accepting the ties would let FAR = 3/4."""
    scores = torch.tensor([0.7, 0.5, 0.5, 0.2, 0.9, 0.5, 0.6], dtype=DT)
    tar, threshold = M.tar_at_far(scores, torch.tensor([0, 0, 0, 0, 1, 1, 1]), 0.25)
    assert threshold.item() == 0.5 and abs(tar.item() - 2 / 3) < 1e-15


def test_tar_at_far_counts_k_exactly():
    """far * n = 0.29 * 100 = 28.999999999999996: 29 impostors may still be accepted."""
    assert math.floor(0.29 * 100) == 28
    scores = torch.cat([torch.arange(100, dtype=DT) / 100, torch.tensor([0.705], dtype=DT)])
    tar, threshold = M.tar_at_far(scores, torch.arange(101) == 100, 0.29)
    assert threshold.item() == 0.70 and tar.item() == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_tar_at_far_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    P = 15 + 7 * seed
    labels = torch.rand(P, generator=g) < 0.3 + 0.1 * (seed % 3)
    labels[:2] = torch.tensor([True, False])
    scores = ((torch.randn(P, generator=g, dtype=DT) + labels.to(DT)) * 4).round() / 4  # ties
    n = int((~labels).sum())
    for far in [0.0, 1e-3, 1 / n, 3 / n, 0.1, 0.25, 0.5, 0.99, 1.0]:
        for dtype in (DT, torch.float32):
            tar, threshold = M.tar_at_far(scores.to(dtype), labels, far)
            want_tar, want_threshold = O.brute_tar_at_far(scores, labels, far)
            assert tar.dtype == threshold.dtype == dtype
            assert threshold.item() == want_threshold and abs(tar.item() - want_tar) < 1e-6, (far, dtype)


def test_tar_at_far_is_vectorised():
    """The ops dispatched do not grow with the number of pairs."""
    def ops(P):
        scores, labels = rand(P, seed=P), torch.arange(P) % 3 == 0
        recorder = OpRecorder()
        with recorder:
            M.tar_at_far(scores, labels, 0.1)
        return len(recorder.ops)
    assert ops(30) == ops(3000)


@pytest.mark.parametrize("scores,labels,far,match", [
    (torch.tensor([0.1, 0.2]), torch.tensor([True, True]), 0.1, "need genuine and impostor pairs"),
    (torch.tensor([0.1, 0.2]), torch.tensor([True]), 0.1, "labels must be a bool"),
    (torch.tensor([0.1, 0.2]), torch.tensor([0, 2]), 0.1, "labels must be a bool"),
    (torch.tensor([0.1, 0.2]), torch.tensor([0.0, 1.0]), 0.1, "labels must be a bool"),
    (torch.tensor([0.1, math.nan]), torch.tensor([True, False]), 0.1, "scores must be finite"),
    (torch.tensor([0.1, 0.2]), torch.tensor([True, False]), 1.5, r"far must be a number in \[0, 1\]"),
    (torch.tensor([[0.1, 0.2]]), torch.tensor([[True, False]]), 0.1, r"scores must have shape \(P,\)"),
])
def test_tar_at_far_rejects_bad_input(scores, labels, far, match):
    with pytest.raises(ValueError, match=match):
        M.tar_at_far(scores, labels, far)


# ================================================================ the grader's probes

def counterpart_tar_at_far(scores, labels, far):
    tar, threshold = O.brute_tar_at_far(scores, labels, far)
    return torch.tensor(tar, dtype=scores.dtype), torch.tensor(threshold, dtype=scores.dtype)


def counterpart_normalized_logits(features, weight):
    return O.loop_normalized_logits(features, weight)


COUNTERPARTS = dict(normalized_logits=counterpart_normalized_logits, margin_logits=O.loop_margin_logits,
                    margin_loss=O.loop_margin_loss, tar_at_far=counterpart_tar_at_far)


@pytest.mark.parametrize("probe, seed", probe_cases("margins"))
def test_probe_agrees_with_the_loops(probe, seed):
    check_probe(probe, seed, M, COUNTERPARTS)


# -- the chapter's classic mistakes ---------------------------------------------

ACOS = "cos_tm = torch.cos(torch.acos({}) + m2)"
SINE = "cos_tm = cos_t * math.cos(m2) - _sine(cos_t) * math.sin(m2)"
TARGET_ONLY = "return s * cosine.scatter(1, target[:, None], target_cos - m3)"

MISTAKES = [
    Mistake("margin_every_class",
            {"margin_logits": edit("cos_t = cosine.gather(1, target[:, None])", "cos_t = cosine",
                                   TARGET_ONLY, "return s * (target_cos - m3)")},
            {"margin_logits"}, "goes on each row's target class only"),
    Mistake("scale_before_margin",
            {"margin_logits": edit(TARGET_ONLY,
                                   "return (s * cosine).scatter(1, target[:, None], s * target_cos - m3)")},
            {"margin_logits"}, "the scale comes after the margin"),
    Mistake("weights_not_normalised",
            {"normalized_logits": edit("return unit_features @ unit_weight.T", "return unit_features @ weight.T")},
            {"normalized_logits"}, "the class weights are not normalised"),
    Mistake("acos_unclamped", {"margin_logits": edit(SINE, ACOS.format("cos_t"))},
            {"margin_logits"}, "has an infinite derivative at +-1"),
    # the same through a clamped arccos: right, within the tests' tolerance at +-1
    Mistake("acos_clamped", {"margin_logits": edit(SINE, ACOS.format("cos_t.clamp(-1 + 1e-7, 1 - 1e-7)"))},
            set()),
    Mistake("no_fallback",
            {"margin_logits": edit("torch.where(cos_t > math.cos(math.pi - m2), cos_tm,",
                                   "torch.where(cos_t > -2, cos_tm,")},
            {"margin_logits"}, "no fallback: once theta + m2 > pi"),
    Mistake("loss_mean_over_all_entries",
            {"margin_loss": edit(
                "return (logits.logsumexp(dim=1) - logits.gather(1, target[:, None]).squeeze(1)).mean()",
                "one_hot = torch.zeros_like(logits).scatter(1, target[:, None], 1.0)\n"
                "    return ((logits.logsumexp(dim=1, keepdim=True) - logits) * one_hot).mean()")},
            {"margin_loss"}, "you averaged over all N x K entries"),
    Mistake("calls_cross_entropy",
            {"margin_loss": edit(
                "return (logits.logsumexp(dim=1) - logits.gather(1, target[:, None]).squeeze(1)).mean()",
                "return torch.nn.functional.cross_entropy(logits, target)")},
            {"margin_loss"}, "an existing implementation"),
]
