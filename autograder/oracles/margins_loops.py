"""Slow, independent references for the angular-margin chapter: oracles, not course code.

Per-entry Python loops written from the papers' formulas (angles through ``acos``, where
the reference works with cosines and sines and ``torch.where``), on 0-dim float64 tensors
so that autograd differentiates them; a brute-force TAR at FAR that tries every
threshold; and a port of InsightFace's ``CombinedMarginLoss.forward``
(recognition/arcface_torch/losses.py at commit 5ef98047, github.com/deepinsight/insightface)
kept as that file writes it. Results have the input's dtype; meant for small inputs.
"""
import math

import torch

def loop_normalized_logits(features, weight):
    """``cos`` of every (feature, class) pair: the dot product over the two norms (each
    floored at 1e-12)."""
    f, w = features.double(), weight.double()
    def norm(v):
        square = (v * v).sum()
        return torch.sqrt(square) if square > 1e-24 else v.new_tensor(1e-12)

    rows = [torch.stack([(x * y).sum() / (norm(x) * norm(y)) for y in w]) for x in f]
    return torch.stack(rows).to(features.dtype)


def target_cosine(c, m1=1.0, m2=0.0):
    """The target's margined cosine before ``- m3`` for one 0-dim cosine ``c``, from the angle.

    ``m1 == 1`` (ArcFace, InsightFace's rule): ``cos(theta + m2)`` while ``theta + m2 < pi``,
    else ``cos(theta) - m2 sin(m2)``. Otherwise SphereFace's psi: ``phi = m1 theta + m2``
    in ``[k pi, (k + 1) pi]`` gives ``(-1)^k cos(phi) - 2k``. At ``|c| >= 1`` the angle is
    the constant 0 or pi (acos has no finite derivative there).
    """
    value = c.item()
    theta = torch.acos(c) if -1 < value < 1 else c.new_tensor(0.0 if value >= 1 else math.pi)
    if m1 == 1:
        return torch.cos(theta + m2) if theta.item() + m2 < math.pi else c - m2 * math.sin(m2)
    phi = m1 * theta + m2
    k = math.floor(phi.item() / math.pi)
    return (-1) ** k * torch.cos(phi) - 2 * k


def loop_margin_logits(cosine, target, s=64.0, m1=1.0, m2=0.0, m3=0.0):
    c, labels = cosine.double(), target.tolist()
    rows = [torch.stack([s * (target_cosine(v, m1, m2) - m3 if j == y else v) for j, v in enumerate(row)])
            for row, y in zip(c, labels)]
    return torch.stack(rows).to(cosine.dtype)


def loop_margin_loss(cosine, target, s=64.0, m1=1.0, m2=0.0, m3=0.0):
    """The mean over samples of ``-log softmax`` at the target, each row's logsumexp by hand
    (shifted by the row's largest logit)."""
    logits, losses = loop_margin_logits(cosine.double(), target, s, m1, m2, m3), []
    for row, y in zip(logits, target.tolist()):
        top = row.max().detach()
        losses.append(top + torch.log(torch.exp(row - top).sum()) - row[y])
    return (sum(losses) / len(losses)).to(cosine.dtype)


def brute_tar_at_far(scores, labels, far):
    """Try every threshold (each score, and -inf): the lowest whose FAR (score > t) is at
    most ``far`` wins; returns ``(tar, threshold)`` as Python floats."""
    pairs = list(zip(scores.double().tolist(), [bool(v) for v in labels.tolist()]))
    impostors = sum(1 for _, genuine in pairs if not genuine)
    genuines = len(pairs) - impostors
    best = None
    for t in [-math.inf] + [score for score, _ in pairs]:
        accepted = sum(1 for score, genuine in pairs if not genuine and score > t)
        if accepted / impostors <= far and (best is None or t < best):
            best = t
    tar = sum(1 for score, genuine in pairs if genuine and score > best) / genuines
    return tar, best


def insightface_combined_margin(logits, labels, s, m1, m2, m3):
    """InsightFace's ``CombinedMarginLoss(s, m1, m2, m3).forward(logits, labels)``
    (interclass filtering off), transcribed; it edits ``logits`` in place, so pass a copy."""
    cos_m, sin_m = math.cos(m2), math.sin(m2)
    theta = math.cos(math.pi - m2)
    sinmm = math.sin(math.pi - m2) * m2
    index_positive = torch.where(labels != -1)[0]
    target_logit = logits[index_positive, labels[index_positive].view(-1)]
    if m1 == 1.0 and m3 == 0.0:
        sin_theta = torch.sqrt(1.0 - torch.pow(target_logit, 2))
        cos_theta_m = target_logit * cos_m - sin_theta * sin_m  # cos(target+margin)
        final_target_logit = torch.where(target_logit > theta, cos_theta_m, target_logit - sinmm)
        logits[index_positive, labels[index_positive].view(-1)] = final_target_logit
        logits = logits * s
    elif m3 > 0:
        final_target_logit = target_logit - m3
        logits[index_positive, labels[index_positive].view(-1)] = final_target_logit
        logits = logits * s
    else:
        raise ValueError("InsightFace's CombinedMarginLoss supports m1 == 1 only")
    return logits
