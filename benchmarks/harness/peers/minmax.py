"""Min-max (asymmetric) / max-abs (symmetric) ranges: torch.ao ``MinMaxObserver`` semantics.

This is REQuant's ``alpha = 1`` and the "standard range" row of every table.
"""

from __future__ import annotations

import torch

from ._quant import fake_quant_range, rows

NAME = "min-max"
EVALUATIONS = 1


def quantize_weight(
    w: torch.Tensor, bits: int, *, per_channel: bool = False, symmetric: bool = False, ch_axis: int = 0
) -> torch.Tensor:
    """Fake-quantize ``w`` on its own min-max (max-abs when symmetric) range."""
    r = rows(w, per_channel, ch_axis)
    return fake_quant_range(
        w, r.amin(1), r.amax(1), bits, symmetric=symmetric, per_channel=per_channel, ch_axis=ch_axis
    )
