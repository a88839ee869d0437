"""Percentile clipping: the range is the ``(100 - q, q)`` percentiles of the weights.

Asymmetric: ``[quantile(w, 1 - q/100), quantile(w, q/100)]``; symmetric:
``amax = quantile(|w|, q/100)``. ``q = 99.9`` by default (pytorch-quantization's weight-free
default is 99.99 on ``|x|`` histograms; on tensors of a few thousand weights 99.99 is the
max, so 99.9 is the more useful clip here).
"""

from __future__ import annotations

import torch

from ._quant import fake_quant_range, rows

NAME = "percentile 99.9"
EVALUATIONS = 1
PERCENTILE = 99.9


def quantize_weight(
    w: torch.Tensor,
    bits: int,
    *,
    per_channel: bool = False,
    symmetric: bool = False,
    ch_axis: int = 0,
    percentile: float = PERCENTILE,
) -> torch.Tensor:
    """Fake-quantize ``w`` on its percentile clipping range (linear interpolation)."""
    r = rows(w, per_channel, ch_axis)
    q = percentile / 100.0
    if symmetric:
        amax = torch.quantile(r.abs(), q, dim=1)
        return fake_quant_range(
            w, -amax, amax, bits, symmetric=True, per_channel=per_channel, ch_axis=ch_axis
        )
    lo = torch.quantile(r, 1.0 - q, dim=1)
    hi = torch.quantile(r, q, dim=1)
    return fake_quant_range(w, lo, hi, bits, symmetric=False, per_channel=per_channel, ch_axis=ch_axis)
