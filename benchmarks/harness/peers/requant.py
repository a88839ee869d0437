"""REQuant through the public API, in the same ``quantize_weight`` shape as the peers."""

from __future__ import annotations

from typing import Any

import torch

from requant_plugin import estimate_range

NAME = "REQuant"


def quantize_weight(
    w: torch.Tensor,
    bits: int,
    *,
    per_channel: bool = False,
    symmetric: bool = False,
    ch_axis: int = 0,
    space: str = "uniform",
    **kwargs: Any,
) -> torch.Tensor:
    """``estimate_range(w, bits, ...).fake_quantize(w)`` (golden search by default)."""
    options: dict[str, Any] = {
        "per_channel": per_channel,
        "symmetric": symmetric,
        "ch_axis": ch_axis,
        "space": space,
        **kwargs,
    }
    est = estimate_range(w, bits, **options)
    return est.fake_quantize(w)
