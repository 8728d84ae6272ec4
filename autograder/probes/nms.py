"""Probes of the box, NMS and box-coding exercise.

Every NMS runs with the course's loop IoU (``nl_box_iou``) and ``batched_nms`` with the
course's loop NMS (``nl_nms``) in place of the student's, as the notebook's tests do, so
each item is verified apart from the student's other answers.
"""
from pathlib import Path

import numpy as np

from ..verify import Probe
from . import STAND_IN

_ORACLES = STAND_IN + (Path(__file__).parent.parent / "oracles" / "nms_loops.py").read_text()


def _crowd(rng, n, clusters, dtype=np.float64, ties=False):
    """``n`` boxes jittered around ``clusters`` objects (a few identical and zero-area ones),
    scores in (0, 1); with ``ties``, scores on a coarse grid (many equal)."""
    centre = rng.uniform(10, 90, (clusters, 2))
    size = rng.uniform(5, 30, (clusters, 2))
    k = rng.integers(0, clusters, n)
    c = centre[k] + rng.normal(size=(n, 2)) * size[k] * 0.15
    s = size[k] * np.clip(1 + 0.15 * rng.normal(size=(n, 2)), 0.3, None)
    boxes = np.concatenate([c - s / 2, c + s / 2], 1)
    boxes[-1] = boxes[0]                                   # an identical pair
    boxes[-2, 2] = boxes[-2, 0]                            # a zero-width box
    scores = rng.integers(1, 5, n) / 5 if ties else rng.uniform(0.01, 0.99, n)
    return boxes.astype(dtype), scores.astype(dtype)


def _with(inputs, boxes, scores):
    """``inputs`` with fixed boxes appended far from the random ones (traps for the classic
    mistakes, so that verification catches each of them on any draw)."""
    dtype = inputs["boxes"].dtype
    return {**inputs, "boxes": np.concatenate([inputs["boxes"], np.array(boxes, dtype)]),
            "scores": np.concatenate([inputs["scores"], np.array(scores, dtype)])}


def _nms(rng, dtype=np.float64, ties=False):
    """A crowd, a pair at IoU exactly ``threshold`` (kept: IoU > threshold suppresses) and a
    pair whose better box comes second (kept instead of the first)."""
    boxes, scores = _crowd(rng, int(rng.integers(15, 40)), int(rng.integers(1, 6)), dtype, ties)
    t = float(rng.choice([0.0, 0.25, 0.5, 0.75]))
    return _with(dict(boxes=boxes, scores=scores, threshold=t),
                 [[200, 200, 204, 201], [200, 200, 200 + 4 * t, 201],
                  [300, 300, 302, 302], [300.2, 300, 302.2, 302]], [1.0, 0.995, 0.3, 0.97])


def _weighted(rng, dtype=np.float64):
    """A crowd and two kept boxes K1, K2 (IoU 1/7) that both overlap C (IoU 5/11), which
    only K1's cluster holds."""
    boxes, scores = _crowd(rng, int(rng.integers(15, 40)), int(rng.integers(1, 6)), dtype)
    return _with(dict(boxes=boxes, scores=scores, threshold=float(rng.uniform(0.15, 0.45))),
                 [[700, 0, 704, 2], [703, 0, 707, 2], [701.5, 0, 705.5, 2]], [0.985, 0.98, 0.975])


def _grid(rng):
    """Integer boxes: IoUs exactly at 1/3, 1/2, ... and tied scores."""
    xy = rng.integers(0, 6, (24, 2)) * 2
    boxes = np.concatenate([xy, xy + rng.integers(1, 4, (24, 2)) * 2], 1).astype(np.float64)
    return dict(boxes=boxes, scores=rng.integers(1, 4, 24) / 4,
                threshold=float(rng.choice([0.25, 1 / 3, 0.5])))


def _batched(rng, dtype=np.float64):
    """Classes from -2 to 3, negative coordinates, and one box twice in two classes."""
    inputs = _nms(rng, dtype, ties=bool(rng.integers(2)))
    inputs = _with(inputs, [[400, 400, 402, 402]] * 2, [0.999, 0.998])
    inputs["boxes"] = inputs["boxes"] - rng.uniform(0, 60)
    idxs = rng.integers(-2, 4, len(inputs["scores"]))
    idxs[-2:] = [0, 1]
    return {**inputs, "idxs": idxs}


def _soft(rng, methods, dtype=np.float64):
    """A crowd, and A, B (IoU 1/2) and C, alone, scored above it: after A is picked, B's
    decayed score falls below C's (B keeps 0.998 * exp(-1/4 / sigma) at most 0.78)."""
    boxes, scores = _crowd(rng, int(rng.integers(10, 30)), int(rng.integers(1, 5)), dtype)
    boxes[-2, 2] = boxes[-2, 0] + 1                         # no zero-area box: gaussian 0 / 0
    return _with(dict(boxes=boxes, scores=scores, threshold=float(rng.uniform(0.2, 0.5)),
                      sigma=float(rng.uniform(0.2, 1.0)), min_score=float(rng.choice([1e-3, 0.05, 0.2])),
                      method=str(rng.choice(methods))),
                 [[500, 500, 503, 501], [501, 500, 504, 501], [600, 600, 602, 602]],
                 [0.999, 0.998, 0.997])


def _coding(rng, dtype=np.float64):
    n = int(rng.integers(1, 12))
    targets, _ = _crowd(rng, n + 2, 3, dtype)
    proposals, _ = _crowd(rng, n + 2, 3, dtype)
    k = int(rng.integers(1, 4))
    weights = [float(w) for w in rng.choice([1.0, 2.0, 5.0, 10.0], 4)]
    return dict(targets=targets[:n], proposals=proposals[:n], weights=weights,
                codes=(rng.normal(size=(n, 4 * k)) * 2).astype(dtype))


def _iou(rng):
    """Two box sets sharing a box, with zero-area boxes (IoU 0, and 0 / 0 = nan)."""
    b1, _ = _crowd(rng, int(rng.integers(3, 9)), 2)
    b2, _ = _crowd(rng, int(rng.integers(3, 9)), 2)
    return dict(b1=b1, b2=np.concatenate([b2, b1[:1], b1[-2:-1]]))


def _with_iou(call):
    return _ORACLES + f"""
with stand_in({call.split("(")[0]}, box_iou=nl_box_iou):
    result = {call}
"""


PROBES = {
    "box_iou": [
        Probe("result = [box_iou(b1, b2), box_iou(b2, b1[:0])]", _iou),
        Probe("result = box_iou(b1, b2)",
              lambda rng: {k: v.astype(np.float32) for k, v in _iou(rng).items()}),
    ],
    "nms": [
        Probe(_with_iou("nms(boxes, scores, threshold)"), _nms),
        Probe(_with_iou("nms(boxes, scores, threshold)"), lambda rng: _nms(rng, ties=True)),
        Probe(_with_iou("nms(boxes, scores, threshold)"), _grid),
        Probe(_with_iou("nms(boxes, scores, threshold)"), lambda rng: _nms(rng, np.float32)),
    ],
    "batched_nms": [
        Probe(_ORACLES + """
with stand_in(batched_nms, nms=nl_nms):
    result = [batched_nms(boxes, scores, idxs, threshold),
              batched_nms(boxes[:0], scores[:0], idxs[:0], threshold)]
""", _batched),
        Probe(_ORACLES + """
with stand_in(batched_nms, nms=nl_nms):
    result = batched_nms(boxes, scores, idxs, threshold)
""", lambda rng: _batched(rng, np.float32)),
    ],
    "soft_nms": [
        Probe(_with_iou("soft_nms(boxes, scores, threshold, sigma, min_score, method)"),
              lambda rng: _soft(rng, ["gaussian"])),
        Probe(_with_iou("soft_nms(boxes, scores, threshold, sigma, min_score, method)"),
              lambda rng: _soft(rng, ["linear", "naive"])),
        Probe(_with_iou("soft_nms(boxes, scores, threshold, sigma, min_score, method)"),
              lambda rng: _soft(rng, ["linear", "gaussian"], np.float32), atol=1e-5),
    ],
    "diou_nms": [
        Probe(_with_iou("diou_nms(boxes, scores, threshold)"), _nms),
        Probe(_with_iou("diou_nms(boxes, scores, threshold)"), lambda rng: _nms(rng, ties=True)),
        Probe(_with_iou("diou_nms(boxes, scores, threshold)"), lambda rng: _nms(rng, np.float32)),
    ],
    "weighted_nms": [
        Probe(_with_iou("weighted_nms(boxes, scores, threshold)"), _weighted),
        Probe(_with_iou("weighted_nms(boxes, scores, threshold)"), lambda rng: _weighted(rng, np.float32),
              atol=1e-4),
    ],
    "encode": [
        Probe("result = encode(targets, proposals, tuple(weights))", _coding),
        Probe("result = encode(targets, proposals, tuple(weights))",
              lambda rng: _coding(rng, np.float32), atol=1e-5),
    ],
    "decode": [
        Probe("result = decode(codes, proposals, tuple(weights))", _coding),
        Probe("result = decode(codes, proposals, tuple(weights))",
              lambda rng: _coding(rng, np.float32), atol=1e-4),
    ],
}
