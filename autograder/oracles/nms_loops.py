"""Loop ports of the box and NMS kernels, one box pair at a time in Python floats.

The independent oracle of the box/NMS chapter: tests/test_<chapter>.py checks the
reference against these, the exercise's hidden tests include this file (and run
the student's answers with ``nl_box_iou`` and ``nl_nms`` in place of their other
answers), and the benchmark times ``nl_nms`` as the loop baseline. torchvision
and mmcv are not installed, so their semantics come from their sources:

- ``nl_nms``: torchvision/csrc/ops/cpu/nms_kernel.cpp (pytorch/vision): boxes
  visited by decreasing score, equal scores in input order; suppressed when
  ``IoU > iou_threshold``.
- ``nl_batched_nms``: torchvision/ops/boxes.py ``_batched_nms_vanilla``: one
  ``nl_nms`` per class, the union sorted by decreasing score (no coordinate trick).
- ``nl_soft_nms``: mmcv/ops/csrc/pytorch/cpu/nms.cpp ``softnms_cpu``
  (open-mmlab/mmcv) with offset 0, line by line: its in-place swaps, ``>=``
  comparisons and the min_score drop that swaps in the last box.
- ``nl_box_iou``, ``nl_generalized_box_iou``, ``nl_distance_box_iou``,
  ``nl_complete_box_iou``: torchvision/ops/boxes.py, pair by pair.
- ``nl_encode``, ``nl_decode``, ``nl_label_anchors``, ``nl_anchors``:
  torchvision/models/detection/_utils.py (``encode_boxes``,
  ``BoxCoder.decode_single``, ``Matcher``) and anchor_utils.py
  (``AnchorGenerator``), box by box.
- ``nl_diou_nms``, ``nl_weighted_nms``, ``nl_adaptive_nms``: the greedy
  kernel's loop with the variant's overlap, cluster mean or threshold.

Every name starts with ``nl_`` so that nothing a student defines in a notebook
shadows it.
"""
import math

import torch


def nl_rows(t):
    return [[float(v) for v in row] for row in t.tolist()]


def nl_pair_iou(a, b):
    """IoU of two boxes as lists; 0 / 0 is nan, as in torchvision."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else (math.nan if inter == 0 else math.copysign(math.inf, inter))


def nl_pair_diou(a, b, eps=1e-7):
    cw = max(a[2], b[2]) - min(a[0], b[0])
    ch = max(a[3], b[3]) - min(a[1], b[1])
    dx = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2
    dy = (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
    return nl_pair_iou(a, b) - (dx * dx + dy * dy) / (cw * cw + ch * ch + eps)


def nl_pairwise(fn, boxes1, boxes2, dtype=None):
    b1, b2 = nl_rows(boxes1), nl_rows(boxes2)
    out = [[fn(a, b) for b in b2] for a in b1]
    return torch.tensor(out, dtype=dtype or boxes1.dtype).reshape(len(b1), len(b2))


def nl_box_iou(boxes1, boxes2):
    """(N, M) IoU, one pair at a time, in the boxes' dtype."""
    return nl_pairwise(nl_pair_iou, boxes1, boxes2)


def nl_generalized_box_iou(boxes1, boxes2):
    def giou(a, b):
        enclosing = ((max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1])))
        inter = (max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
                 * max(0.0, min(a[3], b[3]) - max(a[1], b[1])))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union - (enclosing - union) / enclosing
    return nl_pairwise(giou, boxes1, boxes2)


def nl_distance_box_iou(boxes1, boxes2, eps=1e-7):
    return nl_pairwise(lambda a, b: nl_pair_diou(a, b, eps), boxes1, boxes2)


def nl_complete_box_iou(boxes1, boxes2, eps=1e-7):
    def ciou(a, b):
        v = (4 / math.pi ** 2) * (math.atan((a[2] - a[0]) / (a[3] - a[1]))
                                  - math.atan((b[2] - b[0]) / (b[3] - b[1]))) ** 2
        alpha = v / (1 - nl_pair_iou(a, b) + v + eps)
        return nl_pair_diou(a, b, eps) - alpha * v
    return nl_pairwise(ciou, boxes1, boxes2)


def nl_order(scores):
    """Indices by decreasing score, equal scores in input order."""
    values = scores.tolist()
    return sorted(range(len(values)), key=lambda i: (-values[i], i))


def nl_greedy(boxes, scores, suppresses):
    """The NMS kernel's loop: ``suppresses(kept_index, candidate_index)`` decides."""
    order = nl_order(scores)
    suppressed = [False] * len(order)
    keep = []
    for _i, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[_i + 1:]:
            if not suppressed[j] and suppresses(i, j):
                suppressed[j] = True
    return keep


def nl_nms(boxes, scores, iou_threshold):
    b = nl_rows(boxes)
    keep = nl_greedy(b, scores, lambda i, j: nl_pair_iou(b[i], b[j]) > iou_threshold)
    return torch.tensor(keep, dtype=torch.int64)


def nl_diou_nms(boxes, scores, iou_threshold):
    b = nl_rows(boxes)
    keep = nl_greedy(b, scores, lambda i, j: nl_pair_diou(b[i], b[j]) > iou_threshold)
    return torch.tensor(keep, dtype=torch.int64)


def nl_adaptive_nms(boxes, scores, densities, iou_threshold):
    b, d = nl_rows(boxes), densities.tolist()
    keep = nl_greedy(b, scores,
                     lambda i, j: nl_pair_iou(b[i], b[j]) > max(iou_threshold, d[i]))
    return torch.tensor(keep, dtype=torch.int64)


def nl_batched_nms(boxes, scores, idxs, iou_threshold):
    """torchvision's ``_batched_nms_vanilla``: NMS per class, then all kept by score."""
    classes = idxs.tolist()
    kept = []
    for c in sorted(set(classes)):
        members = [i for i, k in enumerate(classes) if k == c]
        keep = nl_nms(boxes[members], scores[members], iou_threshold).tolist()
        kept += [members[i] for i in keep]
    values = scores.tolist()
    return torch.tensor(sorted(kept, key=lambda i: (-values[i], i)), dtype=torch.int64)


def nl_weighted_nms(boxes, scores, iou_threshold):
    """Greedy NMS; each kept box is the score-weighted mean of itself and the candidates
    it suppresses (each candidate in one cluster, its first suppressor's)."""
    b, s = nl_rows(boxes), scores.tolist()
    clusters = {}

    def suppresses(i, j):
        if nl_pair_iou(b[i], b[j]) > iou_threshold:
            clusters.setdefault(i, []).append(j)
            return True
        return False

    keep = nl_greedy(b, scores, suppresses)
    means = []
    for i in keep:
        members = [i] + clusters.get(i, [])
        total = sum(s[j] for j in members)
        means.append([sum(s[j] * b[j][c] for j in members) / total for c in range(4)])
    return (torch.tensor(means, dtype=boxes.dtype).reshape(-1, 4),
            torch.tensor([s[i] for i in keep], dtype=scores.dtype),
            torch.tensor(keep, dtype=torch.int64))


def nl_soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method="linear"):
    """mmcv's ``softnms_cpu`` with offset 0, in Python floats: ``(dets (K, 5), inds (K,))``."""
    method = {"naive": 0, "linear": 1, "gaussian": 2}[method]
    x1, y1, x2, y2 = (list(col) for col in zip(*nl_rows(boxes))) if len(boxes) else ([],) * 4
    sc = [float(v) for v in scores.tolist()]
    areas = [(x2[k] - x1[k]) * (y2[k] - y1[k]) for k in range(len(sc))]
    inds = list(range(len(sc)))
    nboxes = len(sc)
    dets = []
    i = 0
    while i < nboxes:
        max_score, max_pos = sc[i], i
        for pos in range(i + 1, nboxes):
            if max_score < sc[pos]:
                max_score, max_pos = sc[pos], pos
        ix1, iy1, ix2, iy2, iscore = x1[max_pos], y1[max_pos], x2[max_pos], y2[max_pos], sc[max_pos]
        dets.append([ix1, iy1, ix2, iy2, iscore])
        iarea, iind = areas[max_pos], inds[max_pos]
        for arr in (x1, y1, x2, y2, sc, areas, inds):   # swap max_pos and i
            arr[max_pos], arr[i] = arr[i], arr[max_pos]
        pos = i + 1
        while pos < nboxes:
            w = max(0.0, min(ix2, x2[pos]) - max(ix1, x1[pos]))
            h = max(0.0, min(iy2, y2[pos]) - max(iy1, y1[pos]))
            inter = w * h
            ovr = inter / (iarea + areas[pos] - inter)
            weight = 1.0
            if method == 0:
                if ovr >= iou_threshold:
                    weight = 0.0
            elif method == 1:
                if ovr >= iou_threshold:
                    weight = 1 - ovr
            else:
                weight = math.exp(-(ovr * ovr) / sigma)
            sc[pos] *= weight
            if sc[pos] < min_score:   # drop it: the last box takes its place
                for arr in (x1, y1, x2, y2, sc, areas, inds):
                    arr[pos] = arr[nboxes - 1]
                nboxes -= 1
                pos -= 1
            pos += 1
        i += 1
    return (torch.tensor(dets, dtype=boxes.dtype).reshape(-1, 5),
            torch.tensor(inds[:nboxes], dtype=torch.int64))


def nl_encode(reference_boxes, proposals, weights=(1.0, 1.0, 1.0, 1.0)):
    wx, wy, ww, wh = weights
    out = []
    for g, p in zip(nl_rows(reference_boxes), nl_rows(proposals)):
        pw, ph = p[2] - p[0], p[3] - p[1]
        gw, gh = g[2] - g[0], g[3] - g[1]
        out.append([wx * ((g[0] + 0.5 * gw) - (p[0] + 0.5 * pw)) / pw,
                    wy * ((g[1] + 0.5 * gh) - (p[1] + 0.5 * ph)) / ph,
                    ww * math.log(gw / pw), wh * math.log(gh / ph)])
    return torch.tensor(out, dtype=reference_boxes.dtype).reshape(-1, 4)


def nl_decode(rel_codes, boxes, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=math.log(1000.0 / 16)):
    wx, wy, ww, wh = weights
    out = []
    for codes, b in zip(nl_rows(rel_codes), nl_rows(boxes)):
        w, h = b[2] - b[0], b[3] - b[1]
        row = []
        for k in range(0, len(codes), 4):
            dx, dy = codes[k] / wx, codes[k + 1] / wy
            dw = min(codes[k + 2] / ww, bbox_xform_clip)
            dh = min(codes[k + 3] / wh, bbox_xform_clip)
            cx, cy = dx * w + b[0] + 0.5 * w, dy * h + b[1] + 0.5 * h
            pw, ph = math.exp(dw) * w, math.exp(dh) * h
            row += [cx - 0.5 * pw, cy - 0.5 * ph, cx + 0.5 * pw, cy + 0.5 * ph]
        out.append(row)
    return torch.tensor(out, dtype=rel_codes.dtype).reshape(rel_codes.shape)


def nl_label_anchors(anchors, gt_boxes, high_threshold=0.7, low_threshold=0.3,
                     allow_low_quality_matches=True):
    """torchvision's ``Matcher`` on the (gt, anchor) IoU matrix, anchor by anchor."""
    quality = nl_box_iou(gt_boxes, anchors).tolist()
    labels = []
    for n in range(len(anchors)):
        column = [row[n] for row in quality]
        best = max(column)
        match = column.index(best)
        labels.append(-1 if best < low_threshold else -2 if best < high_threshold else match)
        if allow_low_quality_matches and any(row[n] == max(row) for row in quality):
            labels[-1] = match
    return torch.tensor(labels, dtype=torch.int64)


def nl_anchors(feature_size, sizes, ratios, stride):
    """torchvision's ``AnchorGenerator`` for one feature map, anchor by anchor."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    base = []
    for r in ratios:
        for s in sizes:
            h_ratio = math.sqrt(r)
            w, h = s / h_ratio, s * h_ratio
            base.append([round(-w / 2), round(-h / 2), round(w / 2), round(h / 2)])  # half to even
    out = [[x * sw + b[0], y * sh + b[1], x * sw + b[2], y * sh + b[3]]
           for y in range(feature_size[0]) for x in range(feature_size[1]) for b in base]
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)
