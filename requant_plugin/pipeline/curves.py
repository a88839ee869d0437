"""``L(alpha)`` on a dense grid for a few layers, with the alpha REQuant picked.

The curve is the exact weight-space objective of :mod:`requant_plugin.core` (the same grid,
transform and loss space as the search), evaluated at ``points`` evenly spaced values of
``alpha`` in (0, 1]. For per-channel quantization the curve of output channel 0 is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ..core import Grid, objective_for_rows
from ..options import Space, granularity
from ..ptq import weight_ch_axis
from ..range import RangeSpec, estimate_range, rows_of

__all__ = ["AlphaCurve", "alpha_curve", "pick_curve_layers"]


@dataclass(frozen=True)
class AlphaCurve:
    """``loss[i] = L(alphas[i])`` for one layer; ``chosen`` is REQuant's alpha, ``chosen_loss`` its loss."""

    layer: str
    bits: int
    space: str
    channel: int | None
    alphas: NDArray[np.float64]
    loss: NDArray[np.float64]
    chosen: float
    chosen_loss: float
    minmax_loss: float
    evaluations: int


def pick_curve_layers(names: list[str], count: int = 4) -> list[str]:
    """Up to ``count`` layer names spread evenly from the first to the last."""
    if len(names) <= count:
        return list(names)
    idx = np.unique(np.round(np.linspace(0, len(names) - 1, count)).astype(int))
    return [names[i] for i in idx]


def alpha_curve(
    module: nn.Module, name: str, bits: int, space: str, *, symmetric: bool = False,
    per_channel: bool = False, p: float = 0.5, points: int = 400,
) -> AlphaCurve:
    """Dense ``L(alpha)`` of ``module.weight`` and REQuant's golden-search alpha for it."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name}: weight is not a tensor")
    w = weight.detach()
    axis = weight_ch_axis(module)
    rows = rows_of(w, per_channel, axis)
    channel = 0 if per_channel else None
    if per_channel:
        rows = rows[:1]
    pexp = 1.0 if space == "uniform" else p
    grid = Grid.from_bits(bits, symmetric=symmetric)
    obj = objective_for_rows(rows.astype(np.float64), grid, p=pexp)
    alphas = np.arange(1, points + 1, dtype=np.float64) / points
    loss = obj(alphas[None, :])[0]
    spec = RangeSpec(bits=bits, symmetric=symmetric, granularity=granularity(per_channel, axis),
                     space=Space.parse(space), p=p)
    est = estimate_range(w, spec, name=name)
    chosen = float(est.alpha.reshape(-1)[0])
    chosen_loss = float(obj(np.array([[chosen]]))[0, 0])
    minmax_loss = float(obj(np.array([[1.0]]))[0, 0])
    return AlphaCurve(name, bits, space, channel, alphas, loss, chosen, chosen_loss, minmax_loss,
                      est.evaluations)
