"""Argument checks shared by the reference modules (and inlined into the exercises)."""
from torch import Tensor


def check_image(x, channels: int, name: str) -> None:
    """Raise a ValueError naming ``name`` unless ``x`` is an ``(N, channels, H, W)`` tensor."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"{name}: input must be a tensor of shape (N, {channels}, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if x.shape[1] != channels:
        raise ValueError(f"{name}: input has {x.shape[1]} channels, expected {channels}")
