"""Tests of the reference code in solutions/nms.py.

Oracles (torchvision and mmcv are not installed, so their semantics come from
their sources): the loop ports in autograder/oracles/nms_loops.py (torchvision's
CPU NMS kernel and box functions, mmcv's Soft-NMS kernel with its swaps, the
BoxCoder and Matcher box by box); hand-worked cases whose expected values are
derived here; and the signatures of torchvision.ops and mmcv.ops, transcribed.
"""
import inspect
import math

import pytest
import torch

from autograder.oracles import nms_loops as L
from solutions import nms as R
from tests.helpers import (Mistake, OpRecorder, check_probe, edit, printed_ratio, probe_cases,
                           quick_rows)

DT = torch.float64
EMPTY = inspect.Parameter.empty


def crowd(n, clusters, seed=0, dtype=DT, ties=False, shift=0.0):
    """``n`` boxes jittered around ``clusters`` objects, scores in (0, 1) (on a coarse grid,
    many equal, with ``ties``)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(clusters, 2, generator=g, dtype=DT) * 80 + 10
    size = torch.rand(clusters, 2, generator=g, dtype=DT) * 25 + 5
    k = torch.randint(0, clusters, (n,), generator=g)
    c = centre[k] + torch.randn(n, 2, generator=g, dtype=DT) * size[k] * 0.15
    s = size[k] * (1 + 0.15 * torch.randn(n, 2, generator=g, dtype=DT)).clamp(min=0.3)
    if ties:
        scores = torch.randint(1, 5, (n,), generator=g).to(DT) / 5
    else:
        scores = torch.rand(n, generator=g, dtype=DT) * 0.98 + 0.01
    return (torch.cat([c - s / 2, c + s / 2], 1) + shift).to(dtype), scores.to(dtype)


def boxes_of(rows, dtype=DT):
    return torch.tensor(rows, dtype=dtype).reshape(-1, 4)


def index(*values):
    return torch.tensor(values, dtype=torch.int64)


# ================================================================ signatures

@pytest.mark.parametrize("name,expected", [
    ("box_area", [("boxes", EMPTY)]),
    ("generalized_box_iou", [("boxes1", EMPTY), ("boxes2", EMPTY)]),
    ("distance_box_iou", [("boxes1", EMPTY), ("boxes2", EMPTY), ("eps", 1e-7)]),
    ("complete_box_iou", [("boxes1", EMPTY), ("boxes2", EMPTY), ("eps", 1e-7)]),
    ("nms", [("boxes", EMPTY), ("scores", EMPTY), ("iou_threshold", EMPTY)]),
    ("batched_nms", [("boxes", EMPTY), ("scores", EMPTY), ("idxs", EMPTY), ("iou_threshold", EMPTY)]),
    # mmcv.ops.soft_nms without its offset (always 0 here)
    ("soft_nms", [("boxes", EMPTY), ("scores", EMPTY), ("iou_threshold", 0.3), ("sigma", 0.5),
                  ("min_score", 1e-3), ("method", "linear")]),
    ("adaptive_nms", [("boxes", EMPTY), ("scores", EMPTY), ("densities", EMPTY), ("iou_threshold", EMPTY)]),
    ("decode", [("rel_codes", EMPTY), ("boxes", EMPTY), ("weights", (1.0, 1.0, 1.0, 1.0)),
                ("bbox_xform_clip", math.log(1000.0 / 16))]),
])
def test_signatures_match_torchvision_and_mmcv(name, expected):
    params = inspect.signature(getattr(R, name)).parameters.values()
    assert [(p.name, p.default) for p in params] == expected


def test_box_iou_is_the_roi_chapters():
    from solutions import roi
    assert R.box_iou is roi.box_iou


# ================================================================ overlaps vs the loops

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["generalized_box_iou", "distance_box_iou", "complete_box_iou"])
def test_iou_family_matches_loops(name, dtype):
    b1, _ = crowd(9, 3, seed=1, dtype=dtype)
    b2, _ = crowd(7, 3, seed=2, dtype=dtype)
    out = getattr(R, name)(b1, b2)
    assert out.shape == (9, 7) and out.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(out, getattr(L, f"nl_{name}")(b1, b2), rtol=tol, atol=tol)


def test_iou_family_hand_worked():
    a = boxes_of([[0, 0, 2, 2]])
    b = boxes_of([[1, 0, 3, 2], [3, 0, 5, 2], [0, 0, 2, 2]])
    # IoU 2/6; disjoint at distance 1 (enclosing 5 x 2); identical
    assert R.box_area(b).tolist() == [4.0, 4.0, 4.0]
    torch.testing.assert_close(R.generalized_box_iou(a, b), torch.tensor([[1 / 3, -(10 - 8) / 10, 1.0]], dtype=DT))
    # centres 1 and 3 apart, diagonals^2 of the enclosing boxes 3^2 + 2^2 and 5^2 + 2^2
    torch.testing.assert_close(R.distance_box_iou(a, b),
                               torch.tensor([[1 / 3 - 1 / (13 + 1e-7), -9 / (29 + 1e-7), 1.0]], dtype=DT))
    # equal aspect ratios: CIoU = DIoU
    torch.testing.assert_close(R.complete_box_iou(a, b), R.distance_box_iou(a, b))
    tall = boxes_of([[0, 0, 1, 2]])                                  # atan(1/2) vs atan(1)
    v = 4 / math.pi ** 2 * (math.atan(0.5) - math.atan(1.0)) ** 2
    iou = 2 / 4
    diou = iou - 0.5 ** 2 / (2 ** 2 + 2 ** 2 + 1e-7)
    alpha = v / (1 - iou + v + 1e-7)
    torch.testing.assert_close(R.complete_box_iou(tall, a), torch.tensor([[diou - alpha * v]], dtype=DT))


# ================================================================ nms

NMS_CASES = [(n, clusters, threshold, dtype, ties)
             for n, clusters in [(40, 4), (60, 10), (25, 1)]
             for threshold in (0.0, 0.3, 0.5, 0.7, 1.0)
             for dtype in (torch.float64, torch.float32)
             for ties in (False, True)]


@pytest.mark.parametrize("n,clusters,threshold,dtype,ties", NMS_CASES, ids=str)
def test_nms_matches_torchvision_kernel_loop(n, clusters, threshold, dtype, ties):
    seed = NMS_CASES.index((n, clusters, threshold, dtype, ties))
    boxes, scores = crowd(n, clusters, seed=seed, dtype=dtype, ties=ties)
    keep = R.nms(boxes, scores, threshold)
    assert keep.dtype == torch.int64
    assert keep.tolist() == L.nl_nms(boxes, scores, threshold).tolist()


def test_nms_hand_worked():
    # IoU exactly 0.5 (2 / 4): not above the threshold, both stay
    pair, scores = boxes_of([[0, 0, 3, 1], [1, 0, 4, 1]]), torch.tensor([0.9, 0.8], dtype=DT)
    assert R.nms(pair, scores, 0.5).tolist() == [0, 1]
    assert R.nms(pair, scores, 0.49).tolist() == [0]
    # a chain: 0 suppresses 1 (IoU 1/3), which would have suppressed 2
    chain = boxes_of([[0, 0, 2, 1], [1, 0, 3, 1], [2, 0, 4, 1]])
    assert R.nms(chain, torch.tensor([0.9, 0.8, 0.7], dtype=DT), 0.3).tolist() == [0, 2]
    # sorted by score, not by index
    assert R.nms(chain, torch.tensor([0.1, 0.8, 0.7], dtype=DT), 0.3).tolist() == [1]
    assert R.nms(chain, torch.tensor([0.1, 0.8, 0.7], dtype=DT), 0.4).tolist() == [1, 2, 0]


def test_nms_degenerate_boxes_and_ties():
    same = boxes_of([[1, 1, 3, 3]] * 4)
    # identical boxes, equal scores: the first in input order stays (a stable sort)
    assert R.nms(same, torch.full((4,), 0.5, dtype=DT), 0.5).tolist() == [0]
    assert R.nms(same, torch.tensor([0.5, 0.7, 0.7, 0.1], dtype=DT), 0.99).tolist() == [1]
    # disjoint boxes with equal scores: all kept, in input order
    apart = boxes_of([[i * 3, 0, i * 3 + 2, 2] for i in range(5)])
    assert R.nms(apart, torch.full((5,), 0.3, dtype=DT), 0.0).tolist() == [0, 1, 2, 3, 4]
    # zero-area boxes: IoU 0 with a box, 0 / 0 = nan with another zero-area box; neither suppresses
    flat = boxes_of([[1, 1, 1, 3], [1, 1, 1, 3], [0, 0, 2, 4]])
    assert R.nms(flat, torch.tensor([0.9, 0.8, 0.7], dtype=DT), 0.0).tolist() == [0, 1, 2]
    assert L.nl_nms(flat, torch.tensor([0.9, 0.8, 0.7], dtype=DT), 0.0).tolist() == [0, 1, 2]
    # threshold 1: nothing overlaps more than itself
    assert R.nms(same, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=DT), 1.0).tolist() == [3, 2, 1, 0]
    empty = R.nms(same[:0], torch.zeros(0, dtype=DT), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)


# ================================================================ batched_nms

@pytest.mark.parametrize("seed", range(8))
def test_batched_nms_matches_per_class_loop(seed):
    boxes, scores = crowd(40, 3, seed=seed, ties=seed % 2 == 1, shift=-50.0 * (seed % 3))
    idxs = torch.randint(-1, 3, (40,), generator=torch.Generator().manual_seed(seed))
    keep = R.batched_nms(boxes, scores, idxs, 0.5)
    assert keep.tolist() == L.nl_batched_nms(boxes, scores, idxs, 0.5).tolist()


def test_batched_nms_offset_is_exact_for_negative_coordinates():
    # torchvision's max + 1 = 1 would move class 1's box onto class 0's; span + 1 does not
    boxes = boxes_of([[-5, -5, -1, -1], [-6, -6, -2, -2], [-1, -1, 0, 0]])
    scores = torch.tensor([0.9, 0.8, 0.1], dtype=DT)
    assert R.batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1, 2]
    moved = boxes + torch.tensor([0.0, 1.0, 0.0], dtype=DT)[:, None]
    assert R.nms(moved, scores, 0.5).tolist() == [0, 2]


def test_batched_nms_one_class_is_nms():
    boxes, scores = crowd(30, 4, seed=3)
    assert R.batched_nms(boxes, scores, torch.full((30,), 5), 0.4).tolist() == R.nms(boxes, scores, 0.4).tolist()


# ================================================================ soft_nms

SOFT_CASES = [(method, threshold, sigma, min_score, dtype)
              for method in ("naive", "linear", "gaussian")
              for threshold, sigma, min_score in [(0.3, 0.5, 1e-3), (0.5, 0.2, 0.05), (0.7, 1.0, 0.3)]
              for dtype in (torch.float64, torch.float32)]


@pytest.mark.parametrize("method,threshold,sigma,min_score,dtype", SOFT_CASES, ids=str)
def test_soft_nms_matches_mmcv_kernel_loop(method, threshold, sigma, min_score, dtype):
    seed = SOFT_CASES.index((method, threshold, sigma, min_score, dtype))
    boxes, scores = crowd(40, 5, seed=seed, dtype=dtype)
    dets, inds = R.soft_nms(boxes, scores, threshold, sigma, min_score, method)
    want, want_inds = L.nl_soft_nms(boxes, scores, threshold, sigma, min_score, method)
    assert inds.dtype == torch.int64 and dets.dtype == dtype
    assert inds.tolist() == want_inds.tolist()
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(dets, want, rtol=tol, atol=tol)


def test_soft_nms_hand_worked():
    # A, B overlap with IoU 1/3; C is alone. Linear: B -> 0.8 * 2/3 = 0.533 < C's 0.6
    boxes = boxes_of([[0, 0, 2, 2], [1, 0, 3, 2], [10, 10, 12, 12]])
    scores = torch.tensor([0.9, 0.8, 0.6], dtype=DT)
    dets, inds = R.soft_nms(boxes, scores, 0.3, method="linear")
    assert inds.tolist() == [0, 2, 1]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.6, 0.8 * 2 / 3], dtype=DT))
    assert torch.equal(dets[:, :4], boxes[[0, 2, 1]])
    # gaussian: B -> 0.8 exp(-1/9 / 0.5) = 0.641 > 0.6
    dets, inds = R.soft_nms(boxes, scores, method="gaussian")
    assert inds.tolist() == [0, 1, 2]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.8 * math.exp(-2 / 9), 0.6], dtype=DT))
    # linear decays at IoU == threshold (mmcv's >=); below it, not at all
    assert R.soft_nms(boxes, scores, 1 / 3)[1].tolist() == [0, 2, 1]
    assert R.soft_nms(boxes, scores, 0.34)[1].tolist() == [0, 1, 2]
    # naive: B drops to 0 < min_score
    assert R.soft_nms(boxes, scores, 0.3, method="naive")[1].tolist() == [0, 2]
    # min_score 0.55 drops B (0.533) but not C
    assert R.soft_nms(boxes, scores, 0.3, min_score=0.55)[1].tolist() == [0, 2]


def test_soft_nms_min_score_edge_cases_as_mmcv():
    one = boxes_of([[0, 0, 1, 1]])
    low = torch.tensor([1e-4], dtype=DT)
    # the first pick is output whatever its score; later ones were checked after a decay
    assert R.soft_nms(one, low)[1].tolist() == [0] == L.nl_soft_nms(one, low)[1].tolist()
    two = boxes_of([[0, 0, 1, 1], [5, 5, 6, 6]])
    both_low = torch.tensor([1e-4, 2e-4], dtype=DT)
    assert R.soft_nms(two, both_low)[1].tolist() == [1] == L.nl_soft_nms(two, both_low)[1].tolist()
    dets, inds = R.soft_nms(two[:0], both_low[:0])
    assert dets.shape == (0, 5) and inds.shape == (0,) and inds.dtype == torch.int64


# ================================================================ diou, weighted, adaptive

@pytest.mark.parametrize("seed,threshold", [(0, 0.2), (1, 0.4), (2, 0.6), (3, 0.0)])
def test_diou_nms_matches_loop(seed, threshold):
    boxes, scores = crowd(40, 5, seed=seed, ties=seed == 1)
    assert R.diou_nms(boxes, scores, threshold).tolist() == L.nl_diou_nms(boxes, scores, threshold).tolist()


def test_diou_nms_hand_worked():
    # IoU 1/3, DIoU 1/3 - 4/52: suppressed by nms at 0.3, kept by diou_nms
    boxes = boxes_of([[0, 0, 4, 4], [2, 0, 6, 4]])
    scores = torch.tensor([0.9, 0.8], dtype=DT)
    assert R.nms(boxes, scores, 0.3).tolist() == [0]
    assert R.diou_nms(boxes, scores, 0.3).tolist() == [0, 1]
    assert R.diou_nms(boxes, scores, 1 / 3 - 4 / 52 - 1e-6).tolist() == [0]


@pytest.mark.parametrize("seed,threshold,dtype", [(0, 0.5, DT), (1, 0.3, torch.float32), (2, 0.7, DT)])
def test_weighted_nms_matches_loop(seed, threshold, dtype):
    boxes, scores = crowd(40, 5, seed=seed, dtype=dtype)
    out, kept_scores, keep = R.weighted_nms(boxes, scores, threshold)
    want, want_scores, want_keep = L.nl_weighted_nms(boxes, scores, threshold)
    assert keep.tolist() == want_keep.tolist() == R.nms(boxes, scores, threshold).tolist()
    tol = 1e-12 if dtype == DT else 2e-5
    torch.testing.assert_close(out, want, rtol=tol, atol=tol)
    assert torch.equal(kept_scores, want_scores)


def test_weighted_nms_clusters_do_not_share_boxes():
    # K1, K2 kept (IoU 1/7); C overlaps both (IoU 5/11) and is suppressed by K1 only
    k1, k2, c = [0.0, 0, 4, 2], [3.0, 0, 7, 2], [1.5, 0, 5.5, 2]
    out, kept_scores, keep = R.weighted_nms(boxes_of([k1, k2, c]), torch.tensor([0.9, 0.8, 0.5], dtype=DT), 0.4)
    assert keep.tolist() == [0, 1] and kept_scores.tolist() == [0.9, 0.8]
    expected = [[(0.9 * a + 0.5 * b) / 1.4 for a, b in zip(k1, c)], k2]
    torch.testing.assert_close(out, boxes_of(expected))


@pytest.mark.parametrize("seed", range(4))
def test_adaptive_nms_matches_loop(seed):
    boxes, scores = crowd(40, 4, seed=seed)
    densities = torch.rand(40, generator=torch.Generator().manual_seed(seed), dtype=DT)
    keep = R.adaptive_nms(boxes, scores, densities, 0.4)
    assert keep.tolist() == L.nl_adaptive_nms(boxes, scores, densities, 0.4).tolist()
    # zero density everywhere: greedy NMS
    assert R.adaptive_nms(boxes, scores, densities * 0, 0.4).tolist() == R.nms(boxes, scores, 0.4).tolist()


def test_adaptive_nms_dense_box_keeps_its_neighbour():
    boxes = boxes_of([[0, 0, 2, 2], [0.4, 0, 2.4, 2]])               # IoU 3.2 / 4.8 = 2/3
    scores = torch.tensor([0.9, 0.8], dtype=DT)
    assert R.adaptive_nms(boxes, scores, torch.tensor([0.7, 0.0], dtype=DT), 0.5).tolist() == [0, 1]
    assert R.adaptive_nms(boxes, scores, torch.tensor([0.6, 0.9], dtype=DT), 0.5).tolist() == [0]


# ================================================================ anchors and box coding

@pytest.mark.parametrize("feature_size,sizes,ratios,stride", [
    ((3, 4), (32, 64, 128), (0.5, 1.0, 2.0), 16), ((2, 5), (24,), (1.0, 3.0), (8, 4)),
    ((1, 1), (10, 20), (0.25,), 1)])
def test_anchors_match_loop(feature_size, sizes, ratios, stride):
    out = R.anchors(feature_size, sizes, ratios, stride)
    assert out.shape == (feature_size[0] * feature_size[1] * len(sizes) * len(ratios), 4)
    assert torch.equal(out, L.nl_anchors(feature_size, sizes, ratios, stride))


def test_anchors_hand_worked():
    # size 32, ratio 1 at (0, 0); size 32, ratio 4 (h = 2 w: w = 16, h = 64) one cell right
    out = R.anchors((1, 2), (32,), (1.0, 4.0), 16)
    assert out.tolist() == [[-16, -16, 16, 16], [-8, -32, 8, 32], [0, -16, 32, 16], [8, -32, 24, 32]]


@pytest.mark.parametrize("weights,dtype", [((1.0, 1.0, 1.0, 1.0), DT), ((10.0, 10.0, 5.0, 5.0), DT),
                                           ((2.0, 3.0, 0.5, 4.0), torch.float32)])
def test_encode_decode_match_loops_and_invert(weights, dtype):
    targets, _ = crowd(12, 3, seed=1, dtype=dtype)
    proposals, _ = crowd(12, 3, seed=2, dtype=dtype)
    codes = R.encode(targets, proposals, weights)
    tol = 1e-12 if dtype == DT else 1e-5
    torch.testing.assert_close(codes, L.nl_encode(targets, proposals, weights), rtol=tol, atol=tol)
    torch.testing.assert_close(R.decode(codes, proposals, weights), targets, rtol=tol, atol=tol * 10)
    many = torch.randn(12, 12, generator=torch.Generator().manual_seed(3), dtype=DT).to(dtype) * 3
    torch.testing.assert_close(R.decode(many, proposals, weights), L.nl_decode(many, proposals, weights),
                               rtol=tol, atol=tol)


def test_encode_decode_hand_worked():
    proposal, target = boxes_of([[0, 0, 10, 20]]), boxes_of([[2, 4, 22, 24]])
    torch.testing.assert_close(R.encode(target, proposal, (10.0, 10.0, 5.0, 5.0)),
                               torch.tensor([[7.0, 2.0, 5 * math.log(2), 0.0]], dtype=DT))
    # dw = 10 is clamped to log(1000 / 16): 62.5 times as wide
    torch.testing.assert_close(R.decode(torch.tensor([[0.0, 0.0, 10.0, 0.0]], dtype=DT), proposal),
                               boxes_of([[5 - 312.5, 0, 5 + 312.5, 20]]))


@pytest.mark.parametrize("allow", [True, False])
def test_label_anchors_matches_matcher_loop(allow):
    anchors = R.anchors((12, 12), (16, 32), (0.5, 1.0, 2.0), 8)
    gt, _ = crowd(5, 5, seed=7, dtype=torch.float32)
    labels = R.label_anchors(anchors, gt, 0.6, 0.3, allow)
    assert labels.dtype == torch.int64
    assert labels.tolist() == L.nl_label_anchors(anchors, gt, 0.6, 0.3, allow).tolist()
    assert {-1, -2} < set(labels.tolist())   # negatives, ignored and positives


def test_label_anchors_hand_worked():
    anchors = boxes_of([[0, 0, 2, 2], [1, 0, 3, 2], [10, 10, 12, 12], [0, 0, 2, 1]])
    gt = boxes_of([[0, 0, 2, 2], [11, 10, 13, 12]])
    # IoUs with gt 0: 1, 1/3, 0, 1/2; with gt 1: 0, 0, 1/3, 0
    assert R.label_anchors(anchors, gt, 0.7, 0.3, False).tolist() == [0, -2, -2, -2]
    assert R.label_anchors(anchors, gt, 0.7, 0.4, False).tolist() == [0, -1, -1, -2]
    # low-quality matches: anchor 2 is gt 1's best anchor, so it is matched anyway
    assert R.label_anchors(anchors, gt, 0.7, 0.4, True).tolist() == [0, -1, 1, -2]


# ================================================================ bad input

GOOD = boxes_of([[0, 0, 1, 1], [0, 0, 2, 2]])
SCORES = torch.tensor([0.5, 0.6], dtype=DT)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: R.nms(GOOD[:, :3], SCORES, 0.5), ValueError, r"nms: boxes must have shape \(N, 4\).*got \(2, 3\)"),
    (lambda: R.nms(GOOD[0], SCORES, 0.5), ValueError, r"nms: boxes must have shape \(N, 4\)"),
    (lambda: R.nms(boxes_of([[0, 0, 1, 1], [2, 0, 1, 1]]), SCORES, 0.5), ValueError,
     r"nms: boxes\[1\] = \[2.0, 0.0, 1.0, 1.0\] has x2 < x1 or y2 < y1"),
    (lambda: R.nms(boxes_of([[0, 0, 1, math.nan], [0, 0, 1, 1]]), SCORES, 0.5), ValueError, "non-finite"),
    (lambda: R.nms(GOOD, torch.tensor([0.5, math.nan], dtype=DT), 0.5), ValueError, "nms: scores contain nan"),
    (lambda: R.nms(GOOD, SCORES[:1], 0.5), ValueError, "nms: scores has 1 entries for 2 boxes"),
    (lambda: R.nms(GOOD, SCORES.float(), 0.5), TypeError, "scores dtype torch.float32 differs"),
    (lambda: R.nms(GOOD.long(), SCORES, 0.5), TypeError, "boxes must be a floating-point tensor"),
    (lambda: R.nms(GOOD, SCORES, math.nan), ValueError, "iou_threshold must be a finite number"),
    (lambda: R.nms(GOOD, SCORES, "0.5"), ValueError, "iou_threshold must be a finite number"),
    (lambda: R.batched_nms(GOOD, SCORES, torch.tensor([0]), 0.5), ValueError, "idxs has 1 entries for 2 boxes"),
    (lambda: R.batched_nms(GOOD, SCORES, torch.tensor([0.0, 1.0]), 0.5), TypeError, "idxs must hold integer"),
    (lambda: R.soft_nms(GOOD, SCORES, method="hard"), ValueError,
     r"soft_nms: method must be one of \('naive', 'linear', 'gaussian'\), got 'hard'"),
    (lambda: R.soft_nms(GOOD, SCORES, sigma=0.0), ValueError, "sigma must be positive"),
    (lambda: R.weighted_nms(GOOD, SCORES[:1], 0.5), ValueError, "weighted_nms: scores has 1 entries"),
    (lambda: R.diou_nms(GOOD, SCORES, None), ValueError, "diou_nms: iou_threshold must be a finite number"),
    (lambda: R.adaptive_nms(GOOD, SCORES, SCORES[:1], 0.5), ValueError, "densities has 1 entries"),
    (lambda: R.encode(GOOD, GOOD[:1], (1.0, 1.0, 1.0, 1.0)), ValueError, r"proposals must have shape \(2, 4\)"),
    (lambda: R.encode(GOOD, GOOD, (1.0, 1.0, 0.0, 1.0)), ValueError, "weights must be four positive numbers"),
    (lambda: R.decode(torch.zeros(2, 5, dtype=DT), GOOD), ValueError, r"rel_codes must have shape \(N, 4 k\)"),
    (lambda: R.decode(torch.zeros(3, 4, dtype=DT), GOOD), ValueError, "rel_codes has 3 rows for 2 boxes"),
    (lambda: R.anchors((0, 3), (32,), (1.0,), 16), ValueError, "feature_size must be"),
    (lambda: R.anchors((2, 3), (), (1.0,), 16), ValueError, "sizes must be a non-empty list"),
    (lambda: R.anchors((2, 3), (32,), (1.0,), 0), ValueError, "stride must be a positive int"),
    (lambda: R.label_anchors(GOOD, GOOD[:0]), ValueError, "gt_boxes is empty"),
    (lambda: R.label_anchors(GOOD, GOOD, 0.3, 0.7), ValueError, "low_threshold 0.7 exceeds high_threshold 0.3"),
])
def test_bad_input_is_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ================================================================ vectorisation

def op_count(fn, n):
    """Ops dispatched by ``fn`` on ``n`` copies of two far-apart boxes: two kept, whatever n."""
    boxes = boxes_of([[0, 0, 2, 2], [10, 10, 12, 12]] * n)
    scores = torch.linspace(1, 0.1, 2 * n, dtype=DT)
    recorder = OpRecorder()
    with recorder:
        fn(boxes, scores)
    return len(recorder.ops)


@pytest.mark.parametrize("name,fn", [
    ("nms", lambda b, s: R.nms(b, s, 0.5)),
    ("diou_nms", lambda b, s: R.diou_nms(b, s, 0.5)),
    ("weighted_nms", lambda b, s: R.weighted_nms(b, s, 0.5)),
    ("soft_nms", lambda b, s: R.soft_nms(b, s, 0.5, method="naive")),
    ("batched_nms", lambda b, s: R.batched_nms(b, s, torch.zeros(len(s), dtype=torch.int64), 0.5)),
])
def test_loop_runs_once_per_kept_box_not_per_box(name, fn):
    counts = [op_count(fn, n) for n in (2, 20, 500)]
    assert len(set(counts)) == 1, f"{name}: ops grow with the number of boxes: {counts}"


# ================================================================ benchmark smoke test

def test_bench_quick_runs_and_prints_ratios():
    rows, stdout = quick_rows("bench/nms.py")
    for n in (300, 600):
        for other in ("loop", "ort"):
            row = (f"nms_{n}_vs_{other}", "fwd")
            assert row in rows, f"no {row} row in:\n{stdout}"
            ref_ms, other_ms, ratio, differs = rows[row]
            assert printed_ratio(ratio, ref_ms, other_ms), row
            assert differs == 0, f"the reference and the {other} keep different boxes: {row}"
    assert "load average" in stdout


# ================================================================ the grader's probes

COUNTERPARTS = dict(box_iou=L.nl_box_iou, nms=L.nl_nms, batched_nms=L.nl_batched_nms,
                    soft_nms=L.nl_soft_nms, diou_nms=L.nl_diou_nms, weighted_nms=L.nl_weighted_nms,
                    encode=L.nl_encode, decode=L.nl_decode)


@pytest.mark.parametrize("probe, seed", probe_cases("nms"))
def test_probe_agrees_with_the_loops(probe, seed):
    check_probe(probe, seed, R, COUNTERPARTS)


# -- the classic mistakes ---------------------------------------------------------
# The tests of nms, soft_nms, diou_nms and weighted_nms run with the course's box_iou,
# batched_nms's with the course's nms: each mistake costs its own item only.
MISTAKES = [
    Mistake("ge_threshold", {"nms": edit("survive = ~(iou > iou_threshold)", "survive = ~(iou >= iou_threshold)")},
            {"nms"}, "a box whose IoU equals the threshold survives"),
    Mistake("plus_one_areas",
            {"box_iou": edit("return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])",
                             "return (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)",
                             "wh = upcast(rb - lt).clamp(min=0)", "wh = upcast(rb - lt + 1).clamp(min=0)")},
            {"box_iou"}, "the legacy + 1"),
    Mistake("unsorted", {"nms": edit("order = torch.argsort(scores, descending=True, stable=True)",
                                     "order = torch.arange(len(scores))")},
            {"nms"}, "you visited the boxes in input order"),
    Mistake("across_classes", {"batched_nms": edit("return nms(boxes + offsets[:, None], scores, iou_threshold)",
                                                   "return nms(boxes, scores, iou_threshold)")},
            {"batched_nms"}, "you suppressed across classes"),
    Mistake("no_repick", {"soft_nms": edit("top = int(current.argmax())", "top = 0")},
            {"soft_nms"}, "you kept the initial order"),
    Mistake("gaussian_on_iou", {"soft_nms": edit("torch.exp(-iou ** 2 / sigma)", "torch.exp(-iou / sigma)")},
            {"soft_nms"}, "you used IoU, not its square"),
    Mistake("other_clusters",
            {"weighted_nms": edit("w = weights[cluster]\n",
                                  "members = box_iou(candidates[:1], boxes)[0] > iou_threshold\n"
                                  "        w = scores[members]\n",
                                  "(w[:, None] * candidates[cluster])", "(w[:, None] * boxes[members])")},
            {"weighted_nms"}, "K2's mean includes C"),
    Mistake("swapped_dxdy", {"decode": edit("dx, dy = rel_codes[:, 0::4] / wx, rel_codes[:, 1::4] / wy",
                                            "dy, dx = rel_codes[:, 0::4] / wx, rel_codes[:, 1::4] / wy")},
            {"decode"}, "you swapped dx and dy"),
]
