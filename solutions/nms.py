"""Boxes, IoU and non-maximum suppression: the post-processing of every detector.

A detector scores thousands of overlapping candidate boxes; non-maximum
suppression (NMS) keeps one box per object. This module has the overlap
measures, greedy NMS and four of its variants, and the box coding of
anchor-based detectors:

    box_area, box_iou (the RoI chapter's), generalized_box_iou,
    distance_box_iou, complete_box_iou
                    as ``torchvision.ops`` (pytorch/vision, torchvision/ops/boxes.py):
                    GIoU (Rezatofighi et al., 2019), DIoU and CIoU (Zheng et al.,
                    2020, "Distance-IoU Loss")
    nms, batched_nms
                    greedy NMS as ``torchvision.ops`` (torchvision/csrc/ops/cpu/nms_kernel.cpp;
                    Felzenszwalb et al., 2010; per class with the coordinate-offset trick)
    soft_nms        Soft-NMS (Bodla, Singh, Chellappa & Davis, 2017, "Soft-NMS --
                    Improving Object Detection With One Line of Code") as
                    ``mmcv.ops.soft_nms`` with offset 0 (open-mmlab/mmcv,
                    mmcv/ops/nms.py and mmcv/ops/csrc/pytorch/cpu/nms.cpp)
    diou_nms        greedy NMS on DIoU (Zheng et al., 2020)
    weighted_nms    each kept box becomes the score-weighted mean of its cluster
                    (Ning et al., 2017, "Inception Single Shot MultiBox Detector for
                    Object Detection", ICME workshops)
    adaptive_nms    the threshold rises with the kept box's crowd density (Liu, Huang
                    & Wang, 2019, "Adaptive NMS: Refining Pedestrian Detection in a Crowd")
    anchors, encode, decode, label_anchors
                    Faster R-CNN's anchors, (dx, dy, dw, dh) box coding and IoU-based
                    labelling (Ren, He, Girshick & Sun, 2015), as torchvision's
                    AnchorGenerator, BoxCoder and Matcher
                    (torchvision/models/detection/anchor_utils.py, _utils.py)

Boxes are ``(x1, y1, x2, y2)`` with continuous areas ``(x2 - x1) * (y2 - y1)``
(no legacy +1). Every NMS loops over the boxes it keeps only: each kept box's
overlaps with the remaining candidates are one tensor operation, and the
candidates it suppresses leave the candidate set at once.

The graded bodies lie between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
the argument checks before them stay in the exercise.
"""
import math
import numbers

import torch
from torch import Tensor

from .common import check_tensor, is_int
from .roi import box_iou

def _check_boxes(boxes, name: str, what: str = "boxes") -> int:
    """Raise unless ``boxes`` is a floating ``(N, 4)`` tensor of finite ``(x1, y1, x2, y2)``
    with ``x1 <= x2`` and ``y1 <= y2``; return N."""
    check_tensor(boxes, name, what, dim=2, layout="(N, 4) as (x1, y1, x2, y2)")
    if boxes.shape[1] != 4:
        raise ValueError(f"{name}: {what} must have shape (N, 4) as (x1, y1, x2, y2), got "
                         f"{tuple(boxes.shape)}")
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{name}: {what} contain a non-finite coordinate (nan or inf)")
    reversed_ = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(reversed_.any()):
        k = int(reversed_.nonzero()[0])
        raise ValueError(f"{name}: {what}[{k}] = {boxes[k].tolist()} has x2 < x1 or y2 < y1 "
                         f"(boxes are (x1, y1, x2, y2), top-left corner first)")
    return boxes.shape[0]


def _check_scores(scores, n: int, boxes: Tensor, name: str, what: str = "scores") -> None:
    """Raise unless ``scores`` is an ``(N,)`` tensor of the boxes' dtype without nan."""
    check_tensor(scores, name, what, dtype=boxes.dtype, dim=1, layout="(N,)")
    if scores.shape[0] != n:
        raise ValueError(f"{name}: {what} has {scores.shape[0]} entries for {n} boxes")
    if bool(scores.isnan().any()):
        raise ValueError(f"{name}: {what} contain nan")


def _check_number(value, name: str, what: str) -> float:
    """``value`` as a float; raise unless it is a finite real number."""
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not math.isfinite(value)):
        raise ValueError(f"{name}: {what} must be a finite number, got {value!r}")
    return float(value)


def _check_method(method, name: str) -> None:
    methods = ("naive", "linear", "gaussian")
    if method not in methods:
        raise ValueError(f"{name}: method must be one of {methods}, got {method!r}")


def _check_weights(weights, name: str) -> tuple:
    if (not isinstance(weights, (tuple, list)) or len(weights) != 4
            or not all(isinstance(w, numbers.Real) and not isinstance(w, bool)
                       and math.isfinite(w) and w > 0 for w in weights)):
        raise ValueError(f"{name}: weights must be four positive numbers (wx, wy, ww, wh), "
                         f"got {weights!r}")
    return tuple(float(w) for w in weights)


# ================================================================ overlaps

def _upcast(t: Tensor) -> Tensor:
    """float16/bfloat16 to float32 (torchvision's ``_upcast``, against overflow)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def box_area(boxes: Tensor) -> Tensor:
    """Areas ``(x2 - x1) * (y2 - y1)`` of ``(N, 4)`` boxes, as ``torchvision.ops.box_area``.

    Returns ``(N,)``; float16/bfloat16 boxes give float32.
    """
    _check_boxes(boxes, "box_area")
    boxes = _upcast(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _enclosing_wh(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """``(N, M, 2)`` width and height of the smallest box enclosing each pair."""
    lt = torch.min(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[:, 2:])
    return _upcast(rb - lt).clamp(min=0)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU (Rezatofighi et al., 2019), as ``torchvision.ops.generalized_box_iou``.

    ``GIoU = IoU - (|C| - |A u B|) / |C|`` with C the smallest box enclosing A and
    B: in [-1, 1], and negative for disjoint boxes (the farther apart, the lower).

    Args:
        boxes1: ``(N, 4)``; boxes2: ``(M, 4)``, both ``(x1, y1, x2, y2)``.

    Returns:
        ``(N, M)``.
    """
    _check_boxes(boxes1, "generalized_box_iou", "boxes1")
    _check_boxes(boxes2, "generalized_box_iou", "boxes2")
    iou = box_iou(boxes1, boxes2)
    area1, area2 = box_area(boxes1), box_area(boxes2)
    # the union from the IoU: inter = iou * union and union = a1 + a2 - inter
    union = (area1[:, None] + area2) / (1 + iou)
    wh = _enclosing_wh(boxes1, boxes2)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing


def _diou_iou(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple:
    """``(DIoU, IoU)``, torchvision's ``_box_diou_iou``."""
    iou = box_iou(boxes1, boxes2)
    wh = _enclosing_wh(boxes1, boxes2)
    diagonal_squared = wh[..., 0] ** 2 + wh[..., 1] ** 2 + eps
    centres1 = (boxes1[:, :2] + boxes1[:, 2:]) / 2
    centres2 = (boxes2[:, :2] + boxes2[:, 2:]) / 2
    centre_distance_squared = (_upcast(centres1[:, None] - centres2) ** 2).sum(-1)
    return iou - centre_distance_squared / diagonal_squared, iou


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise distance IoU (Zheng et al., 2020), as ``torchvision.ops.distance_box_iou``.

    ``DIoU = IoU - rho^2 / (c^2 + eps)``: ``rho`` the distance between the two
    centres, ``c`` the diagonal of the smallest box enclosing both. In (-1, 1];
    it tells apart two pairs of equal IoU by how far their centres are.

    Args:
        boxes1: ``(N, 4)``; boxes2: ``(M, 4)``, both ``(x1, y1, x2, y2)``.
        eps: added to ``c^2`` against 0 / 0.

    Returns:
        ``(N, M)``.
    """
    _check_boxes(boxes1, "distance_box_iou", "boxes1")
    _check_boxes(boxes2, "distance_box_iou", "boxes2")
    return _diou_iou(_upcast(boxes1), _upcast(boxes2), eps)[0]


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise complete IoU (Zheng et al., 2020), as ``torchvision.ops.complete_box_iou``.

    ``CIoU = DIoU - alpha * v`` with the aspect-ratio term
    ``v = 4 / pi^2 * (atan(w1 / h1) - atan(w2 / h2))^2`` and
    ``alpha = v / (1 - IoU + v + eps)`` (computed without gradient, as torchvision).

    Args:
        boxes1: ``(N, 4)``; boxes2: ``(M, 4)``, both ``(x1, y1, x2, y2)``.
        eps: against 0 / 0.

    Returns:
        ``(N, M)``.
    """
    _check_boxes(boxes1, "complete_box_iou", "boxes1")
    _check_boxes(boxes2, "complete_box_iou", "boxes2")
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    diou, iou = _diou_iou(boxes1, boxes2, eps)
    w1, h1 = boxes1[:, None, 2] - boxes1[:, None, 0], boxes1[:, None, 3] - boxes1[:, None, 1]
    w2, h2 = boxes2[:, 2] - boxes2[:, 0], boxes2[:, 3] - boxes2[:, 1]
    v = (4 / torch.pi ** 2) * (torch.atan(w1 / h1) - torch.atan(w2 / h2)) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


# ================================================================ greedy NMS and its variants

def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms``.

    Visit the boxes by decreasing score; keep a box unless a box kept before it
    overlaps it with ``IoU > iou_threshold`` (strictly greater: a box at exactly
    the threshold survives). Equal scores keep their input order (a stable
    sort). IoU uses continuous areas (no +1), so an IoU of ``0 / 0`` (two
    zero-area boxes) is nan and suppresses nothing, as in torchvision's kernel.

    Vectorised over candidates: each kept box's IoU with all remaining
    candidates is one ``box_iou`` call, and the ones it suppresses leave at once;
    the loop runs once per kept box.

    Args:
        boxes: ``(N, 4)`` floating ``(x1, y1, x2, y2)``, finite, x1 <= x2, y1 <= y2.
        scores: ``(N,)``, same dtype, no nan.
        iou_threshold: float; suppress IoU strictly above it.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, by decreasing score.
    """
    n = _check_boxes(boxes, "nms")
    _check_scores(scores, n, boxes, "nms")
    iou_threshold = _check_number(iou_threshold, "nms", "iou_threshold")
    ### BEGIN SOLUTION
    order = torch.argsort(scores, descending=True, stable=True)
    candidates, rest = boxes[order], order   # the candidates still in play, best first
    keep = []
    while len(rest):
        keep.append(rest[:1])                # the best remaining candidate is kept
        iou = box_iou(candidates[:1], candidates[1:])[0]
        survive = ~(iou > iou_threshold)     # nan (0 / 0) suppresses nothing
        candidates, rest = candidates[1:][survive], rest[1:][survive]
    return torch.cat(keep) if keep else order
    ### END SOLUTION


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each class, as ``torchvision.ops.batched_nms``: boxes of different classes
    never suppress each other.

    The coordinate-offset trick (torchvision's ``_batched_nms_coordinate_trick``):
    one ``nms`` call on boxes shifted by ``idxs * (span + 1)`` along both axes,
    where ``span = max - min`` over all coordinates. Boxes of two classes then
    lie in disjoint squares (their IoU is exactly 0, never above a threshold
    >= 0), and within a class the shift is the same for every box, which leaves
    every IoU unchanged. torchvision shifts by ``max + 1``, exact for the
    non-negative coordinates it expects; ``span + 1`` is exact for any.

    Args:
        boxes: ``(N, 4)``; scores: ``(N,)``, as ``nms``.
        idxs: ``(N,)`` integer class (or image) index of each box.
        iou_threshold: float, as ``nms``.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, by decreasing score.
    """
    n = _check_boxes(boxes, "batched_nms")
    _check_scores(scores, n, boxes, "batched_nms")
    check_tensor(idxs, "batched_nms", "idxs", dtype=idxs.dtype, dim=1, layout="(N,)")
    if idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool:
        raise TypeError(f"batched_nms: idxs must hold integer class indices, got {idxs.dtype}")
    if idxs.shape[0] != n:
        raise ValueError(f"batched_nms: idxs has {idxs.shape[0]} entries for {n} boxes")
    iou_threshold = _check_number(iou_threshold, "batched_nms", "iou_threshold")
    ### BEGIN SOLUTION
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    span = boxes.max() - boxes.min()
    offsets = idxs.to(boxes) * (span + 1)   # classes in disjoint squares
    return nms(boxes + offsets[:, None], scores, iou_threshold)
    ### END SOLUTION


def soft_nms(boxes: Tensor, scores: Tensor, iou_threshold: float = 0.3, sigma: float = 0.5,
             min_score: float = 1e-3, method: str = "linear") -> tuple:
    """Soft-NMS (Bodla et al., 2017), as ``mmcv.ops.soft_nms`` with ``offset=0``.

    Instead of removing the boxes that overlap a kept one, lower their scores.
    Repeat until no candidate is left: pick the candidate of highest *current*
    score (re-picked after every decay), output it with that score, then
    multiply every remaining candidate's score by a weight of its IoU with the
    picked box,

        naive      0          if IoU >= iou_threshold, else 1 (greedy NMS with >=)
        linear     1 - IoU    if IoU >= iou_threshold, else 1
        gaussian   exp(-IoU^2 / sigma)   (every candidate; iou_threshold unused)

    and drop every candidate whose score is now below ``min_score``. mmcv's
    kernel compares with ``>=`` (greedy NMS uses ``>``), and checks
    ``min_score`` only after a decay: the first pick is output even if its score
    is below it. On equal current scores the candidate earlier in decreasing
    order of the input scores (then input order) is picked; mmcv's kernel
    picks by its own swapped array position, which can differ only on exact ties.

    Args:
        boxes: ``(N, 4)`` floating ``(x1, y1, x2, y2)``; scores: ``(N,)``, same dtype, no nan.
        iou_threshold: float (naive and linear).
        sigma: positive float (gaussian).
        min_score: float; candidates decayed below it are dropped.
        method: ``"naive"``, ``"linear"`` or ``"gaussian"``.

    Returns:
        ``(dets, inds)``: ``dets (K, 5)`` rows ``(x1, y1, x2, y2, score)`` with the
        score at the time the box was picked, in the order picked; ``inds (K,)`` int64
        the picked boxes' input indices.
    """
    n = _check_boxes(boxes, "soft_nms")
    _check_scores(scores, n, boxes, "soft_nms")
    iou_threshold = _check_number(iou_threshold, "soft_nms", "iou_threshold")
    sigma = _check_number(sigma, "soft_nms", "sigma")
    min_score = _check_number(min_score, "soft_nms", "min_score")
    if sigma <= 0:
        raise ValueError(f"soft_nms: sigma must be positive, got {sigma!r}")
    _check_method(method, "soft_nms")
    ### BEGIN SOLUTION
    order = torch.argsort(scores, descending=True, stable=True)
    candidates, current, rest = boxes[order], scores[order], order
    picked, picked_scores = [], []
    while len(rest):
        top = int(current.argmax())          # re-pick: decays reorder the candidates
        picked.append(rest[top:top + 1])
        picked_scores.append(current[top:top + 1])
        others = torch.arange(len(rest), device=boxes.device) != top
        box, candidates, current, rest = (candidates[top:top + 1], candidates[others],
                                          current[others], rest[others])
        iou = box_iou(box, candidates)[0]
        if method == "gaussian":
            weight = torch.exp(-iou ** 2 / sigma)
        else:
            decayed = torch.zeros_like(iou) if method == "naive" else 1 - iou
            weight = torch.where(iou >= iou_threshold, decayed, 1)
        current = current * weight
        survive = ~(current < min_score)
        candidates, current, rest = candidates[survive], current[survive], rest[survive]
    if not picked:
        return boxes.new_zeros((0, 5)), order
    inds = torch.cat(picked)
    return torch.cat([boxes[inds], torch.cat(picked_scores)[:, None]], 1), inds
    ### END SOLUTION


def diou_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS on distance IoU (DIoU-NMS, Zheng et al., 2020).

    As ``nms``, with ``distance_box_iou`` (eps 1e-7) in place of IoU: a box is
    suppressed when its DIoU with a kept box is strictly above
    ``iou_threshold``. Two overlapping boxes whose centres lie far apart have a
    lower DIoU than their IoU, so both survive: the occluded neighbour of a kept
    object is not removed.

    Args, Returns: as ``nms``.
    """
    n = _check_boxes(boxes, "diou_nms")
    _check_scores(scores, n, boxes, "diou_nms")
    iou_threshold = _check_number(iou_threshold, "diou_nms", "iou_threshold")
    ### BEGIN SOLUTION
    order = torch.argsort(scores, descending=True, stable=True)
    candidates, rest = boxes[order], order
    keep = []
    while len(rest):
        keep.append(rest[:1])
        diou = distance_box_iou(candidates[:1], candidates[1:])[0]
        survive = ~(diou > iou_threshold)
        candidates, rest = candidates[1:][survive], rest[1:][survive]
    return torch.cat(keep) if keep else order
    ### END SOLUTION


def weighted_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> tuple:
    """Weighted NMS (Ning et al., 2017, ICME workshops): greedy NMS whose kept boxes average
    their clusters.

    The kept boxes are exactly ``nms``'s. A kept box's cluster is itself and the
    candidates it suppresses, i.e. those not yet suppressed by a better kept
    box; the output box is the score-weighted mean of the cluster's boxes,
    ``sum_j s_j b_j / sum_j s_j``, and keeps its own score. A candidate belongs
    to one cluster only: the first kept box that suppresses it.

    Args:
        boxes: ``(N, 4)``; scores: ``(N,)`` positive (the weights), same dtype.
        iou_threshold: float, as ``nms``.

    Returns:
        ``(boxes (K, 4), scores (K,), keep (K,) int64)``, by decreasing score.
    """
    n = _check_boxes(boxes, "weighted_nms")
    _check_scores(scores, n, boxes, "weighted_nms")
    iou_threshold = _check_number(iou_threshold, "weighted_nms", "iou_threshold")
    ### BEGIN SOLUTION
    order = torch.argsort(scores, descending=True, stable=True)
    candidates, weights, rest = boxes[order], scores[order], order
    keep, means = [], []
    while len(rest):
        keep.append(rest[:1])
        iou = box_iou(candidates[:1], candidates[1:])[0]
        # the cluster: the kept box and the candidates it suppresses
        cluster = torch.cat([iou.new_ones(1, dtype=torch.bool), iou > iou_threshold])
        w = weights[cluster]
        means.append((w[:, None] * candidates[cluster]).sum(0, keepdim=True) / w.sum())
        candidates, weights, rest = candidates[~cluster], weights[~cluster], rest[~cluster]
    if not keep:
        return boxes.new_zeros((0, 4)), scores.new_zeros(0), order
    keep = torch.cat(keep)
    return torch.cat(means), scores[keep], keep
    ### END SOLUTION


def adaptive_nms(boxes: Tensor, scores: Tensor, densities: Tensor, iou_threshold: float) -> Tensor:
    """Adaptive NMS (Liu, Huang & Wang, 2019): the threshold follows the crowd.

    As ``nms``, but a kept box ``i`` suppresses a candidate when their IoU is
    above ``max(iou_threshold, densities[i])``: in a crowd (a predicted density,
    the object's largest IoU with another ground-truth object, above the
    threshold) overlapping neighbours survive; in sparse scenes it is greedy NMS.

    Args:
        boxes: ``(N, 4)``; scores: ``(N,)``, as ``nms``.
        densities: ``(N,)`` predicted density of each box, same dtype, no nan.
        iou_threshold: float, the least threshold.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, by decreasing score.
    """
    n = _check_boxes(boxes, "adaptive_nms")
    _check_scores(scores, n, boxes, "adaptive_nms")
    _check_scores(densities, n, boxes, "adaptive_nms", "densities")
    iou_threshold = _check_number(iou_threshold, "adaptive_nms", "iou_threshold")
    order = torch.argsort(scores, descending=True, stable=True)
    candidates, rest = boxes[order], order
    keep = []
    while len(rest):
        keep.append(rest[:1])
        threshold = torch.clamp(densities[rest[0]], min=iou_threshold)
        iou = box_iou(candidates[:1], candidates[1:])[0]
        survive = ~(iou > threshold)
        candidates, rest = candidates[1:][survive], rest[1:][survive]
    return torch.cat(keep) if keep else order


# ================================================================ anchors and box coding

def anchors(feature_size, sizes, ratios, stride) -> Tensor:
    """The anchors of one feature map, as torchvision's ``AnchorGenerator`` (Faster R-CNN).

    At every feature position ``(y, x)`` (row-major), one anchor per
    ``(ratio, size)`` pair, ratio-major: width ``size / sqrt(ratio)`` and height
    ``size * sqrt(ratio)`` (``ratio = h / w``, area ``size^2``), centred at
    ``(x * stride_w, y * stride_h)`` (torchvision's shifts: the cell's top-left
    pixel), its half-sizes' corners rounded to integers as torchvision's base anchors
    (``round(-w / 2)`` ...; ``torch.round``, half to even).

    Args:
        feature_size: ``(H, W)`` of the feature map, positive ints.
        sizes: positive anchor sizes (the square root of the area), in pixels.
        ratios: positive aspect ratios ``h / w``.
        stride: int or ``(stride_h, stride_w)``, image pixels per feature pixel.

    Returns:
        ``(H * W * len(ratios) * len(sizes), 4)`` float32 ``(x1, y1, x2, y2)``.
    """
    if (not isinstance(feature_size, (tuple, list)) or len(feature_size) != 2
            or not all(is_int(v) and v >= 1 for v in feature_size)):
        raise ValueError(f"anchors: feature_size must be (H, W), positive ints, got {feature_size!r}")
    stride_h, stride_w = (stride, stride) if is_int(stride) else tuple(stride)
    if not all(is_int(v) and v >= 1 for v in (stride_h, stride_w)):
        raise ValueError(f"anchors: stride must be a positive int or a pair of them, got {stride!r}")
    for what, values in (("sizes", sizes), ("ratios", ratios)):
        if (not isinstance(values, (tuple, list)) or not values
                or not all(_check_number(v, "anchors", what) > 0 for v in values)):
            raise ValueError(f"anchors: {what} must be a non-empty list of positive numbers, "
                             f"got {values!r}")
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    h_ratios = torch.sqrt(torch.as_tensor(ratios, dtype=torch.float32))
    ws = (scales[None, :] / h_ratios[:, None]).reshape(-1)
    hs = (scales[None, :] * h_ratios[:, None]).reshape(-1)
    base = (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()      # (A, 4)
    H, W = feature_size
    shift_y, shift_x = torch.meshgrid(torch.arange(H, dtype=torch.float32) * stride_h,
                                      torch.arange(W, dtype=torch.float32) * stride_w,
                                      indexing="ij")
    shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=2).reshape(-1, 1, 4)
    return (shifts + base).reshape(-1, 4)


def encode(reference_boxes: Tensor, proposals: Tensor,
           weights=(1.0, 1.0, 1.0, 1.0)) -> Tensor:
    """Regression targets of ``reference_boxes`` relative to ``proposals`` (Faster R-CNN's
    parameterisation), as torchvision's ``BoxCoder.encode_single``.

    With widths ``w = x2 - x1``, centres ``cx = x1 + 0.5 w`` (likewise y, h),
    ``p`` the proposal (anchor) and ``g`` the reference (ground-truth) box:

        dx = wx (g_cx - p_cx) / p_w      dy = wy (g_cy - p_cy) / p_h
        dw = ww log(g_w / p_w)           dh = wh log(g_h / p_h)

    Args:
        reference_boxes: ``(N, 4)`` floating, the boxes to encode.
        proposals: ``(N, 4)``, same dtype, of positive width and height.
        weights: ``(wx, wy, ww, wh)``, positive; Faster R-CNN's RoI heads use
            ``(10, 10, 5, 5)``, its RPN ``(1, 1, 1, 1)``.

    Returns:
        ``(N, 4)`` rows ``(dx, dy, dw, dh)``.
    """
    n = _check_boxes(reference_boxes, "encode", "reference_boxes")
    check_tensor(proposals, "encode", "proposals", dtype=reference_boxes.dtype,
                 shape=(n, 4), layout="(N, 4)")
    _check_boxes(proposals, "encode", "proposals")
    wx, wy, ww, wh = _check_weights(weights, "encode")
    ### BEGIN SOLUTION
    p_w = proposals[:, 2] - proposals[:, 0]
    p_h = proposals[:, 3] - proposals[:, 1]
    p_cx, p_cy = proposals[:, 0] + 0.5 * p_w, proposals[:, 1] + 0.5 * p_h
    g_w = reference_boxes[:, 2] - reference_boxes[:, 0]
    g_h = reference_boxes[:, 3] - reference_boxes[:, 1]
    g_cx, g_cy = reference_boxes[:, 0] + 0.5 * g_w, reference_boxes[:, 1] + 0.5 * g_h
    return torch.stack([wx * (g_cx - p_cx) / p_w, wy * (g_cy - p_cy) / p_h,
                        ww * torch.log(g_w / p_w), wh * torch.log(g_h / p_h)], dim=1)
    ### END SOLUTION


def decode(rel_codes: Tensor, boxes: Tensor, weights=(1.0, 1.0, 1.0, 1.0),
           bbox_xform_clip: float = math.log(1000.0 / 16)) -> Tensor:
    """Boxes from regression codes relative to ``boxes``, as torchvision's
    ``BoxCoder.decode_single``: the inverse of ``encode``.

    ``dx, dy, dw, dh = code / (wx, wy, ww, wh)``; ``dw`` and ``dh`` are clamped
    to at most ``bbox_xform_clip`` (log(1000 / 16): no box grows more than
    62.5 times) before the exponential; then

        cx = dx w + x1 + 0.5 w     cy = dy h + y1 + 0.5 h
        w' = exp(dw) w             h' = exp(dh) h

    and the box is ``(cx - 0.5 w', cy - 0.5 h', cx + 0.5 w', cy + 0.5 h')``.
    ``rel_codes`` may hold several codes per box (one per class), ``(N, 4 k)``.

    Args:
        rel_codes: ``(N, 4 k)`` floating rows ``(dx, dy, dw, dh, ...)``.
        boxes: ``(N, 4)`` reference boxes (anchors or proposals); cast to the
            codes' dtype.
        weights: ``(wx, wy, ww, wh)``, positive, as ``encode``.
        bbox_xform_clip: float, the largest ``dw``/``dh`` passed to exp.

    Returns:
        ``(N, 4 k)`` decoded ``(x1, y1, x2, y2, ...)``.
    """
    check_tensor(rel_codes, "decode", "rel_codes", dim=2, layout="(N, 4 k)")
    if rel_codes.shape[1] == 0 or rel_codes.shape[1] % 4:
        raise ValueError(f"decode: rel_codes must have shape (N, 4 k), k >= 1, got "
                         f"{tuple(rel_codes.shape)}")
    n = _check_boxes(boxes, "decode")
    if n != rel_codes.shape[0]:
        raise ValueError(f"decode: rel_codes has {rel_codes.shape[0]} rows for {n} boxes")
    wx, wy, ww, wh = _check_weights(weights, "decode")
    bbox_xform_clip = _check_number(bbox_xform_clip, "decode", "bbox_xform_clip")
    ### BEGIN SOLUTION
    boxes = boxes.to(rel_codes.dtype)
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    cx, cy = boxes[:, :1] + 0.5 * w, boxes[:, 1:2] + 0.5 * h
    dx, dy = rel_codes[:, 0::4] / wx, rel_codes[:, 1::4] / wy
    dw = (rel_codes[:, 2::4] / ww).clamp(max=bbox_xform_clip)
    dh = (rel_codes[:, 3::4] / wh).clamp(max=bbox_xform_clip)
    pred_cx, pred_cy = dx * w + cx, dy * h + cy
    pred_w, pred_h = torch.exp(dw) * w, torch.exp(dh) * h
    return torch.stack([pred_cx - 0.5 * pred_w, pred_cy - 0.5 * pred_h,
                        pred_cx + 0.5 * pred_w, pred_cy + 0.5 * pred_h], dim=2).flatten(1)
    ### END SOLUTION


def label_anchors(anchors: Tensor, gt_boxes: Tensor, high_threshold: float = 0.7,
                  low_threshold: float = 0.3, allow_low_quality_matches: bool = True) -> Tensor:
    """IoU-based labelling of anchors, as torchvision's ``Matcher`` on ``box_iou(gt, anchors)``.

    Each anchor takes the ground-truth box of highest IoU (the first on ties).
    If that IoU is below ``low_threshold`` the anchor is negative (-1); in
    ``[low_threshold, high_threshold)`` it is ignored (-2); at or above
    ``high_threshold`` it is positive (the box's index). With
    ``allow_low_quality_matches`` (Faster R-CNN's RPN), every anchor whose IoU
    with some ground-truth box equals that box's best IoU over all anchors (ties
    included) gets its best match back, so every object has a positive anchor.

    Args:
        anchors: ``(N, 4)``; gt_boxes: ``(M, 4)``, M >= 1, same dtype.
        high_threshold, low_threshold: floats, low <= high.
        allow_low_quality_matches: bool.

    Returns:
        ``(N,)`` int64: a ground-truth index, -1 (negative) or -2 (ignored).
    """
    _check_boxes(anchors, "label_anchors", "anchors")
    m = _check_boxes(gt_boxes, "label_anchors", "gt_boxes")
    if m == 0:
        raise ValueError("label_anchors: gt_boxes is empty (no ground-truth box to match)")
    high = _check_number(high_threshold, "label_anchors", "high_threshold")
    low = _check_number(low_threshold, "label_anchors", "low_threshold")
    if low > high:
        raise ValueError(f"label_anchors: low_threshold {low} exceeds high_threshold {high}")
    if not isinstance(allow_low_quality_matches, bool):
        raise ValueError(f"label_anchors: allow_low_quality_matches must be True or False, got "
                         f"{allow_low_quality_matches!r}")
    quality = box_iou(gt_boxes, anchors)                  # (M, N)
    best, matches = quality.max(dim=0)
    labels = torch.where(best < low, -1, torch.where(best < high, -2, matches))
    if allow_low_quality_matches:
        best_for_gt = quality.max(dim=1, keepdim=True).values
        restore = (quality == best_for_gt).any(dim=0)
        labels = torch.where(restore, matches, labels)
    return labels
