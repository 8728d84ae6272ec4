"""Normalisation layers: BatchNorm, LayerNorm, InstanceNorm and GroupNorm.

Every norm computes ``y = (x - mean_S(x)) / sqrt(var_S(x) + eps) * weight + bias``
with the biased variance over a set S of positions; the four differ only in S:

    batch_norm     S = (N, H, W)       per channel         Ioffe & Szegedy, 2015
    layer_norm     S = (C, H, W)       per sample          Ba, Kiros & Hinton, 2016
    instance_norm  S = (H, W)          per sample, channel Ulyanov et al., 2016
    group_norm     S = (C/G, H, W)     per sample, group   Wu & He, 2018

Each function has the signature and semantics of its ``torch.nn.functional``
counterpart. The four share ``_Normalize`` (BatchNorm and InstanceNorm when they
use the batch's statistics), one autograd node whose backward is the closed-form
gradient. The graded bodies lie between
``### BEGIN SOLUTION`` and ``### END SOLUTION``; the argument checks before them
stay in the exercise.
"""
import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .common import check_tensor


def _scale_shift(x: Tensor, scale: Tensor, shift: Tensor, out=None) -> Tensor:
    """``x * scale + shift`` for ``scale`` and ``shift`` one number per row of ``x``, as
    one vectorised pass where the row length allows: the last step of every norm.

    ``torch.addcmul(shift, x, scale)`` computes it, but two of its three inputs then
    repeat a number along the row (stride 0), and PyTorch's CPU loop vectorises only
    when at most one does (``VectorizedLoop2d`` in aten/src/ATen/native/cpu/Loops.h):
    with two it goes element by element. So the rows are cut into tiles of ``k``
    values, 16 <= k <= 64 and at least four tiles a row, and ``scale`` and ``shift``
    repeated ``k`` times along a tile, where every input then has stride 1. Where the
    row length has no such factor, it is two passes, ``x * scale`` and ``+ shift``,
    each with one repeated input.

    Args:
        x: ``(..., L)``.
        scale, shift: size 1 along the last dimension, broadcasting against ``x``;
            e.g. ``(1, C, 1)`` for ``x`` of shape ``(N, C, L)``.
        out: None, or a tensor of the shape of ``x`` to write into.

    Returns:
        ``(..., L)``: ``out``, if given.
    """
    L = x.shape[-1]
    k = max((k for k in range(16, 65) if L % k == 0 and 4 * k <= L), default=0)
    if not k:
        return torch.mul(x, scale, out=out).add_(shift)
    scale, shift = (t.expand(*t.shape[:-1], k).unsqueeze(-2).contiguous() for t in (scale, shift))
    tiles = None if out is None else out.unflatten(-1, (-1, k))
    return torch.addcmul(shift, x.unflatten(-1, (-1, k)), scale, out=tiles).flatten(-2)


class _Normalize(torch.autograd.Function):
    """``(x - mean) / sqrt(var + eps) * weight + bias``, with the mean and the biased
    variance of ``x`` over ``dims``: what the four norms share, as one autograd node.

    Autograd through plain tensor operations keeps and differentiates every operation
    on its own, each adding a full-size term to the gradient; this node's backward is
    the closed-form gradient instead, for any set of dims (``batch_norm_backward``
    is the case of BatchNorm).

    ``_Normalize.apply(x, dims, weight, bias, eps)``:

    Args:
        x: ``(..., L)``, rows of L values; e.g. ``(N, C, L)`` for a batch of images
            with ``L = H * W``.
        dims: the dimensions the statistics reduce, the last one among them; e.g.
            ``(0, 2)`` for BatchNorm, ``(2,)`` for InstanceNorm.
        weight, bias: None, one value per row (tensors of size 1 along the last
            dimension that broadcast against ``x``, e.g. ``(1, C, 1)``), or, for
            ``x`` of shape ``(M, L)``, both given with one value per column:
            shape ``(L,)``.
        eps: added to the variance inside the square root.

    Returns:
        ``(out, mean, var)``: ``out`` of the shape of ``x``; ``mean`` and ``var``
        shaped as ``x`` with size 1 along ``dims``, for the running statistics (no
        gradient flows through them).
    """

    @staticmethod
    def forward(ctx, x, dims, weight, bias, eps):
        ### BEGIN SOLUTION
        n = math.prod(x.shape[d] for d in dims)

        def mean_square(t):  # over dims: the norm of each row first, a fast reduction
            row_norms = torch.linalg.vector_norm(t, dim=-1, keepdim=True)
            return row_norms.square().sum_to_size(mean.shape) / n

        mean = x.mean(dims, keepdim=True)
        # The variance as E[x^2] - mean^2: x read twice, nothing written (torch.var_mean
        # is tens of times slower on CPU). Rounding loses a few eps * E[x^2] of it; where
        # eps * E[x^2] exceeds 1e-6 of the variance (in float32, a mean more than 2.7
        # standard deviations from 0), the variance is taken again, as the mean square of
        # the centred input.
        mean_sq = mean_square(x)
        var = mean_sq - mean.square()
        if (torch.finfo(x.dtype).eps * mean_sq > 1e-6 * var).any():
            var = mean_square(x - mean)
        rstd = torch.rsqrt(var + eps)
        per_column = weight is not None and weight.shape[-1] > 1
        if per_column:  # x_hat, then weight and bias, rows of their own, in place
            out = _scale_shift(x, rstd, -mean * rstd)
            torch.addcmul(bias, out, weight, out=out)
        else:  # one scale and one shift per row: a single pass over x
            scale = rstd if weight is None else rstd * weight
            shift = -mean * scale if bias is None else bias - mean * scale
            out = _scale_shift(x, scale, shift)
        ctx.save_for_backward(x, mean, rstd, weight)
        ctx.n, ctx.per_column = n, per_column
        ctx.bias_shape = None if bias is None else bias.shape
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var
        ### END SOLUTION

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_mean, grad_var):
        ### BEGIN SOLUTION
        x, mean, rstd, weight = ctx.saved_tensors
        g, gx = grad_out, grad_out * x
        # With x_hat = (x - mean) * rstd, dL/dx_hat = g * weight. Per row, the sums of
        # dL/dx_hat and of dL/dx_hat * x; the gradients of weight and bias sum g * x_hat
        # and g, with g * x_hat = (g * x - mean * g) * rstd.
        if ctx.per_column:  # x (M, L), weight (L,): matrix products
            sum_dxhat, sum_dxhat_x = (g @ weight)[:, None], (gx @ weight)[:, None]
            # the two sums of g over the batch in one pass: weighted by rstd * mean and by 1
            sum_g_mean_rstd, grad_bias = torch.cat([rstd * mean, torch.ones_like(mean)], 1).T @ g
            grad_weight = (rstd.T @ gx).view(weight.shape) - sum_g_mean_rstd
        else:
            sum_g, sum_gx = g.sum(-1, keepdim=True), gx.sum(-1, keepdim=True)
            w = 1 if weight is None else weight
            sum_dxhat, sum_dxhat_x = sum_g * w, sum_gx * w
            sum_g_xhat = (sum_gx - mean * sum_g) * rstd
            grad_weight = None if weight is None else sum_g_xhat.sum_to_size(weight.shape)
            grad_bias = None if ctx.bias_shape is None else sum_g.sum_to_size(ctx.bias_shape)
        # means over the statistics' set of dL/dx_hat and of dL/dx_hat * x_hat
        mean_dxhat = sum_dxhat.sum_to_size(mean.shape) / ctx.n
        mean_dxhat_xhat = rstd * (sum_dxhat_x.sum_to_size(mean.shape) / ctx.n - mean * mean_dxhat)
        # grad_x = rstd * (dL/dx_hat - mean_dxhat - x_hat * mean_dxhat_xhat)
        #        = rstd * (weight * g + x_coef * x + const), x_coef and const one number per
        # row, written over g * x, now summed
        x_coef = -rstd * mean_dxhat_xhat
        const = rstd * mean * mean_dxhat_xhat - mean_dxhat
        if ctx.per_column:  # rstd varies down the batch, weight along the row: rstd last
            grad_x = _scale_shift(x, x_coef, const, out=gx).addcmul_(g, weight).mul_(rstd)
        else:  # everything one number per row: two passes
            scale = rstd if weight is None else rstd * weight
            grad_x = _scale_shift(g, scale, rstd * const, out=gx).addcmul_(x, rstd * x_coef)
        return grad_x, None, grad_weight, grad_bias, None
        ### END SOLUTION


def batch_norm(input: Tensor, running_mean, running_var, weight=None, bias=None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch Normalization (Ioffe & Szegedy, 2015), as ``F.batch_norm``.

    Args:
        input: ``(N, C, *)``, normalised per channel over N and every spatial dim.
        running_mean, running_var: ``(C,)`` or None. In training mode they are
            updated in place: ``new = (1 - momentum) * old + momentum * batch``,
            with the *unbiased* batch variance for ``running_var``. In eval mode
            they are the statistics used, so they must be given.
        weight, bias: ``(C,)`` or None, the affine gamma and beta.
        training: use batch statistics (True) or the running ones (False). An
            explicit argument, never inferred from ``torch.is_grad_enabled()``.
        momentum: weight of the new batch in the running averages.
        eps: added to the variance inside the square root.

    Returns:
        ``(N, C, *)``. The batch is normalised with its *biased* variance.
    """
    check_tensor(input, "batch_norm", min_dim=2, layout="(N, C, ...)")
    C = input.shape[1]
    for tensor, what in [(running_mean, "running_mean"), (running_var, "running_var"),
                         (weight, "weight"), (bias, "bias")]:
        if tensor is not None:
            check_tensor(tensor, "batch_norm", what, shape=(C,))
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: running_mean and running_var must both be given "
                         "or both be None")
    if training and input.numel() // C <= 1:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when "
                         f"training, got input of shape {tuple(input.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: running_mean and running_var are needed in eval mode")
    ### BEGIN SOLUTION
    if training:
        rows = input.reshape(input.shape[0], C, -1)  # (N, C, L): a row per (sample, channel)
        per_row = [None if t is None else t.view(1, C, 1) for t in (weight, bias)]
        out, mean, var = _Normalize.apply(rows, (0, 2), *per_row, eps)
        if running_mean is not None:
            n = rows.numel() // C
            mean, var = mean.flatten(), var.flatten()
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean)
                running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))
        return out.view(input.shape)
    # eval: the running statistics are constants, so per channel out = input * scale + shift
    shape = (1, C) + (1,) * (input.dim() - 2)
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias
    return torch.addcmul(shift.view(shape), input, scale.view(shape))
    ### END SOLUTION


def layer_norm(input: Tensor, normalized_shape, weight=None, bias=None,
               eps: float = 1e-5) -> Tensor:
    """Layer Normalization (Ba, Kiros & Hinton, 2016), as ``F.layer_norm``.

    Args:
        input: ``(*, *normalized_shape)``, normalised over its last
            ``len(normalized_shape)`` dims, separately for every leading index.
        normalized_shape: int or tuple, the trailing shape to normalise over.
        weight, bias: ``normalized_shape`` or None: elementwise affine.
        eps: added to the (biased) variance inside the square root.

    Returns:
        Same shape as ``input``. There are no running statistics: train and
        eval behave the same.
    """
    check_tensor(input, "layer_norm", min_dim=1, layout="(N, C, ...)")
    normalized_shape = ((normalized_shape,) if isinstance(normalized_shape, int)
                        else tuple(normalized_shape))
    if len(normalized_shape) == 0:
        raise ValueError("layer_norm: normalized_shape must have at least one dimension")
    if tuple(input.shape[input.dim() - len(normalized_shape):]) != normalized_shape:
        raise ValueError(f"layer_norm: input of shape {tuple(input.shape)} does not end "
                         f"with normalized_shape {normalized_shape}")
    for tensor, what in [(weight, "weight"), (bias, "bias")]:
        if tensor is not None:
            check_tensor(tensor, "layer_norm", what, shape=normalized_shape)
    ### BEGIN SOLUTION
    rows = input.reshape(-1, math.prod(normalized_shape))  # a row per leading index
    if weight is not None or bias is not None:
        # the affine is per element of normalized_shape, one value per column of the
        # rows: _Normalize takes the two together
        weight = rows.new_ones(rows.shape[1]) if weight is None else weight.reshape(-1)
        bias = rows.new_zeros(rows.shape[1]) if bias is None else bias.reshape(-1)
    return _Normalize.apply(rows, (1,), weight, bias, eps)[0].view(input.shape)
    ### END SOLUTION


def instance_norm(input: Tensor, running_mean=None, running_var=None, weight=None,
                  bias=None, use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5) -> Tensor:
    """Instance Normalization (Ulyanov, Vedaldi & Lempitsky, 2016), as ``F.instance_norm``.

    Args:
        input: ``(N, C, *)``, normalised over the spatial dims of each
            (sample, channel) pair separately.
        running_mean, running_var: ``(C,)`` or None. When given and
            ``use_input_stats`` is True, each is updated in place with the
            batch average of the per-instance statistics (unbiased variance),
            ``new = (1 - momentum) * old + momentum * mean_over_N(stat)``.
        weight, bias: ``(C,)`` or None.
        use_input_stats: normalise with each instance's own statistics (True,
            the default in both train and eval) or with the running ones.
        momentum, eps: as in ``batch_norm``.

    Returns:
        ``(N, C, *)``.
    """
    check_tensor(input, "instance_norm", min_dim=3, layout="(N, C, ...)")
    C = input.shape[1]
    for tensor, what in [(running_mean, "running_mean"), (running_var, "running_var"),
                         (weight, "weight"), (bias, "bias")]:
        if tensor is not None:
            check_tensor(tensor, "instance_norm", what, shape=(C,))
    if (running_mean is None) != (running_var is None):
        raise ValueError("instance_norm: running_mean and running_var must both be given "
                         "or both be None")
    if use_input_stats and input[0, 0].numel() <= 1:
        raise ValueError(f"instance_norm: expected more than 1 spatial element, "
                         f"got input of shape {tuple(input.shape)}")
    if not use_input_stats and (running_mean is None or running_var is None):
        raise ValueError("instance_norm: running_mean and running_var are needed "
                         "when use_input_stats=False")
    ### BEGIN SOLUTION
    if use_input_stats:
        rows = input.reshape(input.shape[0], C, -1)  # (N, C, L): a row per (sample, channel)
        per_row = [None if t is None else t.view(1, C, 1) for t in (weight, bias)]
        out, mean, var = _Normalize.apply(rows, (2,), *per_row, eps)
        if running_mean is not None:
            n = rows.shape[2]
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean.mean(0).flatten())
                running_var.mul_(1 - momentum).add_(momentum * var.mean(0).flatten() * n / (n - 1))
        return out.view(input.shape)
    # the running statistics are constants, so per channel out = input * scale + shift
    shape = (1, C) + (1,) * (input.dim() - 2)
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias
    return torch.addcmul(shift.view(shape), input, scale.view(shape))
    ### END SOLUTION


def group_norm(input: Tensor, num_groups: int, weight=None, bias=None,
               eps: float = 1e-5) -> Tensor:
    """Group Normalization (Wu & He, 2018), as ``F.group_norm``.

    Args:
        input: ``(N, C, *)``. The C channels are split into ``num_groups``
            consecutive groups of ``C // num_groups``; each (sample, group) is
            normalised over its channels and spatial dims. ``num_groups=1`` is
            LayerNorm over (C, *); ``num_groups=C`` is InstanceNorm.
        num_groups: must divide C.
        weight, bias: ``(C,)`` or None: per *channel*, not per group.
        eps: added to the (biased) variance inside the square root.

    Returns:
        ``(N, C, *)``. No running statistics: train and eval behave the same.
    """
    check_tensor(input, "group_norm", min_dim=2, layout="(N, C, ...)")
    N, C = input.shape[:2]
    if not isinstance(num_groups, int) or num_groups <= 0 or C % num_groups:
        raise ValueError(f"group_norm: num_groups={num_groups} must be a positive "
                         f"integer dividing the number of channels C={C}")
    for tensor, what in [(weight, "weight"), (bias, "bias")]:
        if tensor is not None:
            check_tensor(tensor, "group_norm", what, shape=(C,))
    ### BEGIN SOLUTION
    G = num_groups
    rows = input.reshape(N, G, C // G, -1)  # (N, G, C/G, L): a row per (sample, channel)
    per_row = [None if t is None else t.view(1, G, C // G, 1) for t in (weight, bias)]
    return _Normalize.apply(rows, (2, 3), *per_row, eps)[0].view(input.shape)
    ### END SOLUTION


class BatchNorm2d(nn.Module):
    """Batch Normalization over ``(N, C, H, W)`` input, as ``nn.BatchNorm2d``.

    Parameters ``weight`` (ones) and ``bias`` (zeros), shape ``(C,)``, when
    ``affine``; buffers ``running_mean`` (zeros), ``running_var`` (ones) and
    ``num_batches_tracked`` (a long scalar) when ``track_running_stats``. The
    names match ``nn.BatchNorm2d``, so state dicts load across.

    ``forward`` uses batch statistics in training mode or when running stats
    are not tracked, the running ones otherwise. Each training forward adds 1
    to ``num_batches_tracked``; with ``momentum=None`` the running stats are
    the cumulative average, i.e. the update uses ``1 / num_batches_tracked``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        ### BEGIN SOLUTION
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        ### END SOLUTION

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() != 4:
            raise ValueError(f"BatchNorm2d: expected 4-D input (N, C, H, W), "
                             f"got shape {tuple(input.shape)}")
        if input.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d: expected {self.num_features} channels, "
                             f"got {input.shape[1]}")
        ### BEGIN SOLUTION
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / self.num_batches_tracked.item()
        use_batch_stats = self.training or self.running_mean is None
        return batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                          use_batch_stats, momentum, self.eps)
        ### END SOLUTION

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


def batch_norm_backward(grad_out: Tensor, x: Tensor, weight=None, eps: float = 1e-5):
    """Closed-form gradient of training-mode ``batch_norm`` (no autograd).

    The forward pass is ``y = weight * x_hat + bias`` with ``x_hat = (x - mean)
    / sqrt(var + eps)``, the batch mean and biased variance of each channel
    taken over every dimension but C. Returns the gradients of the loss with
    respect to ``x``, ``weight`` and ``bias`` given ``grad_out``, the gradient
    with respect to ``y``; the mean and variance depend on ``x`` too.

    Args:
        grad_out: ``(N, C, *)``, dLoss/dy.
        x: ``(N, C, *)``, the input of the forward pass.
        weight: ``(C,)`` or None (then taken as ones).
        eps: the forward pass's eps.

    Returns:
        ``(grad_input (N, C, *), grad_weight (C,), grad_bias (C,))``.
    """
    check_tensor(x, "batch_norm_backward", min_dim=2, layout="(N, C, ...)")
    if grad_out.shape != x.shape:
        raise ValueError(f"batch_norm_backward: grad_out shape {tuple(grad_out.shape)} "
                         f"differs from x shape {tuple(x.shape)}")
    if weight is not None:
        check_tensor(weight, "batch_norm_backward", "weight", shape=(x.shape[1],))
    ### BEGIN SOLUTION
    C = x.shape[1]
    rows, g = (t.reshape(x.shape[0], C, -1) for t in (x, grad_out))  # (N, C, L), as batch_norm
    m = rows.numel() // C
    mean = rows.mean((0, 2))
    # the variance as E[x^2] - mean^2, x read and nothing written, unless rounding would
    # cost more than 1e-6 of it: then from the centred input (as _Normalize)
    mean_sq = (torch.linalg.vector_norm(rows, dim=2) ** 2).sum(0) / m
    var = mean_sq - mean ** 2
    if (torch.finfo(x.dtype).eps * mean_sq > 1e-6 * var).any():
        var = (torch.linalg.vector_norm(rows - mean[:, None], dim=2) ** 2).sum(0) / m
    inv_std = torch.rsqrt(var + eps)
    grad_bias = g.sum((0, 2))
    # sum(grad_out * x_hat) with x_hat = (x - mean) * inv_std, without forming x_hat; the
    # product, once summed, is overwritten with grad_input
    gx = g * rows
    grad_weight = (gx.sum((0, 2)) - mean * grad_bias) * inv_std
    scale = inv_std if weight is None else inv_std * weight
    # grad_input = scale * (grad_out - grad_bias / m - x_hat * grad_weight / m), per
    # channel a multiple of x plus a constant plus a multiple of grad_out: two passes
    x_coef = -scale * inv_std * grad_weight / m
    const = scale * (inv_std * grad_weight * mean - grad_bias) / m
    grad_input = _scale_shift(rows, x_coef[:, None], const[:, None], out=gx)
    grad_input.addcmul_(g, scale[:, None])
    return grad_input.view(x.shape), grad_weight, grad_bias
    ### END SOLUTION
