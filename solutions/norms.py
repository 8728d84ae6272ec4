"""Normalisation layers: BatchNorm, LayerNorm, InstanceNorm and GroupNorm.

Every norm computes ``y = (x - mean_S(x)) / sqrt(var_S(x) + eps) * weight + bias``
with the biased variance over a set S of positions; the four differ only in S:

    batch_norm     S = (N, H, W)       per channel         Ioffe & Szegedy, 2015
    layer_norm     S = (C, H, W)       per sample          Ba, Kiros & Hinton, 2016
    instance_norm  S = (H, W)          per sample, channel Ulyanov et al., 2016
    group_norm     S = (C/G, H, W)     per sample, group   Wu & He, 2018

Each function has the signature and semantics of its ``torch.nn.functional``
counterpart. The graded bodies lie between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; the argument checks before them stay in the exercise.
"""
import torch
from torch import Tensor, nn

from .common import check_tensor


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
    shape = (1, C) + (1,) * (input.dim() - 2)
    if training:
        n = input.numel() // C
        # The variance as the mean square of the centred input: accurate however far
        # the mean lies from 0. Each (sample, channel) row is reduced first: a
        # reduction along contiguous rows is fast and sums accurately, and the two
        # are several times faster than torch.var_mean's value-by-value loop on CPU.
        rows = input.reshape(input.shape[0], C, -1)
        mean = rows.mean((0, 2))
        var = (torch.linalg.vector_norm(rows - mean[:, None], dim=2) ** 2).sum(0) / n
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean)
                running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))
    else:
        mean, var = running_mean, running_var
    # per channel, out = input * scale + shift: a single pass over the input
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
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
    dims = tuple(range(-len(normalized_shape), 0))
    n = torch.Size(normalized_shape).numel()
    mean = input.mean(dims, keepdim=True)
    centred = input - mean
    var = torch.linalg.vector_norm(centred, dim=dims, keepdim=True) ** 2 / n  # as in batch_norm
    out = centred * torch.rsqrt(var + eps)
    # the affine is elementwise, not per row: a second pass
    if weight is not None:
        out = out * weight if bias is None else torch.addcmul(bias, out, weight)
    elif bias is not None:
        out = out + bias
    return out
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
    dims = tuple(range(2, input.dim()))
    shape = (1, C) + (1,) * (input.dim() - 2)
    if use_input_stats:
        n = input[0, 0].numel()
        mean = input.mean(dims, keepdim=True)  # the variance as in batch_norm
        var = torch.linalg.vector_norm(input - mean, dim=dims, keepdim=True) ** 2 / n
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean.mean(0).flatten())
                running_var.mul_(1 - momentum).add_(
                    momentum * var.mean(0).flatten() * n / (n - 1))
    else:
        mean, var = running_mean.view(shape), running_var.view(shape)
    # per (sample, channel), out = input * scale + shift: a single pass over the input
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.view(shape)
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.view(shape)
    return torch.addcmul(shift, input, scale)
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
    grouped = input.reshape(N, G, -1)                                   # a row per group
    mean = grouped.mean(-1, keepdim=True)
    var = torch.linalg.vector_norm(grouped - mean, dim=-1, keepdim=True) ** 2 / grouped.shape[-1]
    # per (sample, channel), out = input * scale + shift: a single pass over the input
    rstd = torch.rsqrt(var + eps)                                      # (N, G, 1)
    scale = rstd.expand(N, G, C // G).reshape(N, C)
    shift = (-mean * rstd).expand(N, G, C // G).reshape(N, C)
    if weight is not None:
        scale, shift = scale * weight, shift * weight
    if bias is not None:
        shift = shift + bias
    shape = (N, C) + (1,) * (input.dim() - 2)
    return torch.addcmul(shift.view(shape), input, scale.view(shape))
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
    dims = [0, *range(2, x.dim())]
    shape = (1, C) + (1,) * (x.dim() - 2)
    m = x.numel() // C
    rows = x.reshape(x.shape[0], C, -1)      # statistics as in batch_norm
    mean = rows.mean((0, 2))
    var = (torch.linalg.vector_norm(rows - mean[:, None], dim=2) ** 2).sum(0) / m
    inv_std = torch.rsqrt(var + eps)
    grad_bias = grad_out.sum(dims)
    # sum(grad_out * x_hat) with x_hat = (x - mean) * inv_std, without forming x_hat
    grad_weight = ((grad_out * x).sum(dims) - mean * grad_bias) * inv_std
    scale = inv_std if weight is None else inv_std * weight
    # grad_input = scale * (grad_out - grad_bias / m - x_hat * grad_weight / m), per
    # channel a multiple of grad_out plus a multiple of x plus a constant: two passes,
    # the second in place
    x_coef = -scale * inv_std * grad_weight / m
    const = scale * (inv_std * grad_weight * mean - grad_bias) / m
    grad_input = torch.addcmul(const.view(shape), x, x_coef.view(shape))
    grad_input.addcmul_(grad_out, scale.view(shape))
    return grad_input, grad_weight, grad_bias
    ### END SOLUTION
