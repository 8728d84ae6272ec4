"""Argument checks shared by the reference modules (and inlined into the exercises)."""
from torch import Tensor


def is_int(value) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def as_pair(value, what: str, minimum: int, name: str) -> tuple:
    """``value`` as a pair of ints >= minimum (an int means the same for H and W)."""
    pair = (value, value) if is_int(value) else value
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2
            and all(is_int(v) and v >= minimum for v in pair)):
        bound = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name}: {what} must be a {bound} int or a pair of them, got {value!r}")
    return tuple(pair)


def check_positive(name: str, **values) -> None:
    """Raise a ValueError naming ``name`` unless every value is a positive int."""
    for what, value in values.items():
        if not is_int(value) or value < 1:
            raise ValueError(f"{name}: {what} must be a positive int, got {value!r}")


def check_tensor(t, name: str, what: str = "input", *, dtype=None, dim=None, min_dim=None,
                 layout="", shape=None) -> None:
    """Raise naming ``name`` unless ``t`` is a tensor of the input's ``dtype`` (any
    floating-point dtype if None) with exactly ``dim`` (at least ``min_dim``) dimensions
    and, if given, the exact ``shape``; ``layout`` (e.g. ``"(N, C, H, W)"``) names the
    dimensions in the message."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: {what} must be a torch.Tensor, got {type(t).__name__}")
    if dtype is None and not t.is_floating_point():
        raise TypeError(f"{name}: {what} must be a floating-point tensor, got {t.dtype}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name}: {what} dtype {t.dtype} differs from input dtype {dtype}")
    if min_dim is not None and t.dim() < min_dim:
        raise ValueError(f"{name}: {what} must have at least {min_dim} dimensions {layout}, "
                         f"got shape {tuple(t.shape)}")
    if dim is not None and t.dim() != dim:
        expected = f"shape {layout}, got" if layout else f"{dim} dimensions, got shape"
        raise ValueError(f"{name}: {what} must have {expected} {tuple(t.shape)}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: {what} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def check_kernel_fits(name: str, kernel_size: tuple, dilation: tuple, padded: tuple) -> None:
    """Raise naming ``name`` unless a ``kernel_size`` kernel with ``dilation`` fits in the
    padded input of size ``padded = (H, W)``, i.e. the convolution has an output pixel."""
    span = [d * (k - 1) + 1 for d, k in zip(dilation, kernel_size)]
    if span[0] > padded[0] or span[1] > padded[1]:
        raise ValueError(f"{name}: the kernel spans {span[0]}x{span[1]} pixels (dilation "
                         f"included), larger than the padded input {padded[0]}x{padded[1]}")


def check_image(x, channels: int, name: str) -> None:
    """Raise a ValueError naming ``name`` unless ``x`` is an ``(N, channels, H, W)`` tensor."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"{name}: input must be a tensor of shape (N, {channels}, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if x.shape[1] != channels:
        raise ValueError(f"{name}: input has {x.shape[1]} channels, expected {channels}")
