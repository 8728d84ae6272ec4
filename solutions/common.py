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


def check_image(x, channels: int, name: str) -> None:
    """Raise a ValueError naming ``name`` unless ``x`` is an ``(N, channels, H, W)`` tensor."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"{name}: input must be a tensor of shape (N, {channels}, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if x.shape[1] != channels:
        raise ValueError(f"{name}: input has {x.shape[1]} channels, expected {channels}")
