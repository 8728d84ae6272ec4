"""Metric learning with angular margins: normalised Softmax, SphereFace, CosFace and ArcFace.

A classifier's last layer scores feature ``x_i`` against class weight ``W_j`` by
``W_j . x_i = |W_j| |x_i| cos(theta_ij)``. Normalising both leaves the cosine: the
classes then differ only in angle, on the unit hypersphere. A margin makes the
target class harder to win during training, which pulls each class into a tighter
cone and opens a gap between classes:

    normalized_logits   cos(theta_ij) for every feature and class, (N, D) x (K, D) -> (N, K)
    margin_logits       InsightFace's combined margin: s * (cos(m1 theta + m2) - m3) for
                        the target class, s * cos(theta) for the others
                            SphereFace (Liu et al., 2017)                   m1  angle times m1
                            CosFace (Wang et al., 2018) and
                            AM-Softmax (Wang, Cheng, Liu & Liu, 2018)       m3  cosine minus m3
                            ArcFace (Deng, Guo, Xue & Zafeiriou, 2019)      m2  angle plus m2
    sphereface_psi      SphereFace's monotonic extension of cos(m1 theta + m2)
    margin_loss         cross-entropy of the margin logits, the mean over the batch
    MarginHead          the class weights and the loss as an nn.Module
    tar_at_far          pair verification: true accept rate at a false accept rate

``margin_logits`` ports ``CombinedMarginLoss`` of InsightFace's
``recognition/arcface_torch/losses.py`` (github.com/deepinsight/insightface, as of
commit 5ef98047, 2022): ``cos(theta + m2)`` from the cosine and the sine, and, once
``theta + m2`` passes pi (where the cosine would rise again), the fallback
``cos(theta) - m2 * sin(m2)`` that keeps the target logit decreasing in theta.
Unlike that code it takes the three margins together (InsightFace's branch for
``m3 > 0`` ignores ``m1`` and ``m2``; with ``m3 = 0`` it raises for ``m1 != 1``), and
its gradient stays finite at ``cos = +-1`` (InsightFace's ``sqrt(1 - cos^2)`` has an
infinite one there; its later revision takes ``arccos`` under ``no_grad`` instead, so
its gradient with respect to the cosine is ``s`` for every entry and it has no fallback).

The graded bodies lie between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the
argument checks before them stay in the exercise.
"""
import math
import numbers

import torch
from torch import Tensor, nn

from .common import check_tensor, is_int


def _check_features(features, weight, name: str) -> None:
    check_tensor(features, name, "features", dim=2, layout="(N, D)")
    check_tensor(weight, name, "weight", dtype=features.dtype, dim=2, layout="(K, D)")
    if features.shape[1] != weight.shape[1]:
        raise ValueError(f"{name}: features have D={features.shape[1]} dimensions, the class "
                         f"weights D={weight.shape[1]}")


def _check_target(cosine, target, name: str) -> None:
    check_tensor(cosine, name, "cosine", dim=2, layout="(N, K)")
    if not isinstance(target, Tensor) or target.dtype != torch.int64 or target.dim() != 1:
        got = f"{target.dtype} {tuple(target.shape)}" if isinstance(target, Tensor) else type(target).__name__
        raise TypeError(f"{name}: target must be an int64 tensor of shape (N,) holding class "
                        f"indices, got {got}")
    if target.shape[0] != cosine.shape[0]:
        raise ValueError(f"{name}: target has {target.shape[0]} labels for {cosine.shape[0]} rows "
                         f"of cosine")
    if target.numel() and (target.min() < 0 or target.max() >= cosine.shape[1]):
        raise ValueError(f"{name}: target holds class indices in [0, {cosine.shape[1] - 1}], got "
                         f"values from {target.min().item()} to {target.max().item()}")
    if not bool(torch.isfinite(cosine).all()) or bool((cosine.abs() > 1 + 1e-4).any()):
        raise ValueError(f"{name}: cosine must hold cosines, in [-1, 1] (up to rounding); got "
                         f"values up to {cosine.abs().max().item():.4g} in magnitude: normalise "
                         f"the features and the class weights (normalized_logits)")


def _check_margins(s, m1, m2, m3, name: str) -> None:
    for what, value in [("s", s), ("m1", m1), ("m2", m2), ("m3", m3)]:
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{name}: {what} must be a finite number, got {value!r}")
    if s <= 0:
        raise ValueError(f"{name}: the scale s must be positive, got {s!r}")
    if m1 <= 0:
        raise ValueError(f"{name}: the multiplicative margin m1 must be positive (1 for none), "
                         f"got {m1!r}")
    if not 0 <= m2 < math.pi:
        raise ValueError(f"{name}: the additive angular margin m2 must lie in [0, pi) (0 for "
                         f"none), got {m2!r}")
    if m3 < 0:
        raise ValueError(f"{name}: the additive cosine margin m3 must be non-negative (0 for "
                         f"none), got {m3!r}")


def _sine(cosine: Tensor) -> Tensor:
    """``sin(theta) = sqrt(1 - cos^2)``, exact, with a zero gradient where it is 0.

    The true derivative ``-cos / sin`` is infinite at ``cos = +-1``; clamping at the
    smallest positive normal number changes no value (``1 - cos^2`` of a floating-point
    cosine is 0 or far above it) but stops the gradient there.
    """
    return (1 - cosine * cosine).clamp(min=torch.finfo(cosine.dtype).tiny).sqrt()


def normalized_logits(features: Tensor, weight: Tensor) -> Tensor:
    """Cosine of the angle between every feature and every class weight.

    Both are L2-normalised along D as ``F.normalize`` does, ``v / max(|v|, 1e-12)``
    (a zero vector gives cosines 0), and then multiplied: the logits of normalised
    Softmax before the scale (Wang, Xiang, Cheng & Yuille, 2017, "NormFace";
    SphereFace normalises the weights only).

    Args:
        features: ``(N, D)``, floating point.
        weight: ``(K, D)``, one row per class (``nn.Linear``'s layout), features' dtype.

    Returns:
        ``(N, K)``, features' dtype, entries in [-1, 1] up to rounding.
    """
    _check_features(features, weight, "normalized_logits")
    ### BEGIN SOLUTION
    unit_features = features / features.norm(dim=1, keepdim=True).clamp(min=1e-12)
    unit_weight = weight / weight.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return unit_features @ unit_weight.T
    ### END SOLUTION


def sphereface_psi(cosine: Tensor, m1: float, m2: float = 0.0) -> Tensor:
    """SphereFace's monotonic extension of ``cos(m1 * theta + m2)`` (Liu et al., 2017).

    With ``phi = m1 * theta + m2`` and ``k = floor(phi / pi)``,
    ``psi = (-1)^k cos(phi) - 2k``: equal to ``cos(phi)`` while ``phi <= pi``, then
    continued so that it keeps decreasing in theta (and is continuous). ``theta`` is
    ``atan2(sin, cos)``, finite with a finite gradient at ``cos = +-1``.

    Args:
        cosine: any shape, entries in [-1, 1].
        m1: positive multiplicative margin (SphereFace uses 4), m2: additive angle in [0, pi).

    Returns:
        the same shape and dtype.
    """
    phi = m1 * torch.atan2(_sine(cosine), cosine) + m2
    k = torch.floor(phi / math.pi)
    return (1 - 2 * torch.remainder(k, 2)) * torch.cos(phi) - 2 * k


def margin_logits(cosine: Tensor, target: Tensor, s: float = 64.0, m1: float = 1.0,
                  m2: float = 0.0, m3: float = 0.0) -> Tensor:
    """The combined angular margin of InsightFace's ``CombinedMarginLoss``.

    With ``theta = arccos(cosine)``, the logit of row i's target class ``y_i`` becomes
    ``s * (cos(m1 * theta + m2) - m3)`` and every other logit ``s * cosine``: the margin
    is taken from the target class only, before the scale. Settings (s, m1, m2, m3):

        normalised Softmax     (s, 1, 0, 0)
        CosFace                (s, 1, 0, m3)   s = 64, m3 = 0.35
        AM-Softmax             (s, 1, 0, m3)   s = 30, m3 = 0.35
        ArcFace                (s, 1, m2, 0)   s = 64, m2 = 0.5
        SphereFace             (s, m1, 0, 0)   m1 = 4 (without its annealing to Softmax)

    For ``m1 = 1`` the target cosine is InsightFace's: ``cos(theta + m2) = cos * cos(m2) -
    sin * sin(m2)`` with ``sin = sqrt(1 - cos^2)`` while ``cos > cos(pi - m2)`` (i.e.
    ``theta + m2 < pi``), else ``cos - m2 * sin(pi - m2)``, which keeps the target logit
    decreasing in theta where ``cos(theta + m2)`` would rise again. For ``m1 != 1`` it
    is ``sphereface_psi(cos, m1, m2)``. The gradient is finite everywhere; at
    ``cos = +-1`` the sine contributes none (its true derivative is infinite there).

    Args:
        cosine: ``(N, K)`` cosines (``normalized_logits``), entries in [-1, 1].
        target: ``(N,)`` int64 class indices in ``[0, K - 1]``.
        s: positive scale (the radius of the hypersphere).
        m1: positive multiplicative angular margin (1 for none).
        m2: additive angular margin in radians, in [0, pi) (0 for none).
        m3: additive cosine margin, >= 0 (0 for none).

    Returns:
        ``(N, K)`` logits, cosine's dtype.
    """
    _check_target(cosine, target, "margin_logits")
    _check_margins(s, m1, m2, m3, "margin_logits")
    ### BEGIN SOLUTION
    cos_t = cosine.gather(1, target[:, None])
    if m1 == 1:
        cos_tm = cos_t * math.cos(m2) - _sine(cos_t) * math.sin(m2)
        target_cos = torch.where(cos_t > math.cos(math.pi - m2), cos_tm,
                                 cos_t - math.sin(math.pi - m2) * m2)
    else:
        target_cos = sphereface_psi(cos_t, m1, m2)
    return s * cosine.scatter(1, target[:, None], target_cos - m3)
    ### END SOLUTION


def margin_loss(cosine: Tensor, target: Tensor, s: float = 64.0, m1: float = 1.0,
                m2: float = 0.0, m3: float = 0.0) -> Tensor:
    """Softmax cross-entropy of the margin logits, the mean over the batch.

    ``loss = (1/N) sum_i [ log sum_j exp(z_ij) - z_i,y_i ]`` with ``z = margin_logits(cosine,
    target, s, m1, m2, m3)``: ``F.cross_entropy(z, target)``, written with ``logsumexp``,
    which stays finite for any scale.

    Args:
        cosine, target, s, m1, m2, m3: as ``margin_logits``.

    Returns:
        0-dim tensor, cosine's dtype.
    """
    _check_target(cosine, target, "margin_loss")
    _check_margins(s, m1, m2, m3, "margin_loss")
    if cosine.shape[0] == 0:
        raise ValueError("margin_loss: the mean over an empty batch is undefined")
    ### BEGIN SOLUTION
    logits = margin_logits(cosine, target, s, m1, m2, m3)
    return (logits.logsumexp(dim=1) - logits.gather(1, target[:, None]).squeeze(1)).mean()
    ### END SOLUTION


class MarginHead(nn.Module):
    """Class weights and margin loss in one module, as InsightFace's ``PartialFC`` (all
    classes) with ``CombinedMarginLoss``, or pytorch-metric-learning's ``ArcFaceLoss``.

    ``weight`` is ``(num_classes, in_features)``, drawn from N(0, 0.01^2) as InsightFace
    does. ``head(features, target)`` is ``margin_loss(normalized_logits(features,
    head.weight), target, s, m1, m2, m3)``; at test time compare features by their
    cosine, or classify with ``normalized_logits(features, head.weight)``.
    """

    def __init__(self, in_features: int, num_classes: int, s: float = 64.0, m1: float = 1.0,
                 m2: float = 0.0, m3: float = 0.0):
        super().__init__()
        for what, value in [("in_features", in_features), ("num_classes", num_classes)]:
            if not is_int(value) or value < 1:
                raise ValueError(f"MarginHead: {what} must be a positive int, got {value!r}")
        _check_margins(s, m1, m2, m3, "MarginHead")
        self.in_features, self.num_classes = in_features, num_classes
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.weight = nn.Parameter(torch.normal(0, 0.01, (num_classes, in_features)))

    def forward(self, features: Tensor, target: Tensor) -> Tensor:
        """``(N, in_features)`` features and ``(N,)`` int64 labels -> 0-dim mean loss."""
        return margin_loss(normalized_logits(features, self.weight), target,
                           self.s, self.m1, self.m2, self.m3)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, s={self.s}, "
                f"m1={self.m1}, m2={self.m2}, m3={self.m3}")


def _check_pairs(scores, labels, far, name: str) -> None:
    check_tensor(scores, name, "scores", dim=1, layout="(P,)")
    if not isinstance(labels, Tensor) or labels.shape != scores.shape or not (
            labels.dtype == torch.bool or (not labels.is_floating_point() and not labels.is_complex()
                                           and bool(((labels == 0) | (labels == 1)).all()))):
        raise ValueError(f"{name}: labels must be a bool (or 0/1 integer) tensor of the scores' "
                         f"shape {tuple(scores.shape)}, True for a genuine pair (same identity)")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{name}: scores must be finite")
    genuine = int(labels.sum())
    if genuine == 0 or genuine == labels.numel():
        raise ValueError(f"{name}: need genuine and impostor pairs, got {genuine} genuine of "
                         f"{labels.numel()}")
    if not isinstance(far, numbers.Real) or isinstance(far, bool) or not 0 <= far <= 1:
        raise ValueError(f"{name}: far must be a number in [0, 1], got {far!r}")


def tar_at_far(scores: Tensor, labels: Tensor, far: float) -> tuple[Tensor, Tensor]:
    """True accept rate at a false accept rate, for pair verification (e.g. LFW, IJB).

    A pair is accepted when its score (e.g. the cosine of two features) is strictly
    above a threshold t. ``FAR(t)`` is the fraction of impostor pairs accepted,
    ``TAR(t)`` that of genuine pairs. The threshold is the lowest t with
    ``FAR(t) <= far``: with n impostors of which at most k may be accepted (the largest
    k with ``k / n <= far``, in float64), t is the (k+1)-th largest impostor score, or
    ``-inf`` when k = n (every pair accepted). Impostors tied with t are rejected, so
    ties never push FAR above ``far``; genuine pairs tied with t are rejected too.

    Args:
        scores: ``(P,)`` floating point, finite; higher means more alike.
        labels: ``(P,)`` bool (or 0/1 integers), True for a genuine pair; both kinds present.
        far: the false accept rate allowed, in [0, 1].

    Returns:
        ``(tar, threshold)``, 0-dim tensors of scores' dtype.
    """
    _check_pairs(scores, labels, far, "tar_at_far")
    ### BEGIN SOLUTION
    labels = labels.bool()
    impostor = scores[~labels].sort(descending=True).values
    n = impostor.numel()
    k = int((torch.arange(1, n + 1, dtype=torch.float64) / n <= far).sum())
    threshold = impostor[k] if k < n else scores.new_tensor(-math.inf)
    tar = (scores[labels] > threshold).to(scores.dtype).mean()
    return tar, threshold
    ### END SOLUTION
