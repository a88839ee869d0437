"""A torch tensor as the 2-D NumPy rows the core searches: checks and layout."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_tensor", "rows_of"]


def check_tensor(w: torch.Tensor, name: str) -> None:
    """``TypeError`` unless ``w`` is a floating-point torch tensor (``name`` labels the message)."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if not (w.is_floating_point()):
        raise TypeError(
            f"{name} has dtype {w.dtype}: REQuant needs floating-point weights "
            "(float32, float16, bfloat16 or float64); cast integer tensors first"
        )


def rows_of(w: torch.Tensor, per_channel: bool, ch_axis: int) -> np.ndarray:
    """Lay ``w`` out as float32 (or float64) NumPy rows: ``(1, n)`` or ``(C, n / C)`` (``(0, 0)``
    for zero channels, so an empty tensor gives an empty per-channel estimate)."""
    x = w.detach()
    x = x.double() if x.dtype == torch.float64 else x.float()
    if per_channel and x.dim() > 0:
        c = x.shape[ch_axis]
        x = x.movedim(ch_axis, 0).reshape(c, x.numel() // c if c else 0)
    else:
        x = x.reshape(1, -1)
    return x.cpu().numpy()
