"""Where per-tensor weight ranges collapse: per-layer weight SQNR of the BN-folded network (what
``convert_fx`` and pt2e quantize), per tensor vs per channel, and each layer's channel spread."""

from __future__ import annotations

import copy
import math
from typing import Any, cast

import torch
from torch import nn

from requant_plugin import estimate_range
from requant_plugin.ptq import fold_bn_, quantizable_layers, weight_ch_axis

#: (column, estimate_range keywords): symmetric like the integer backends' weights
SETTINGS: dict[str, dict[str, Any]] = {
    "pt min-max": {"per_channel": False, "search": "minmax"},
    "pt REQuant": {"per_channel": False},
    "pc min-max": {"per_channel": True, "search": "minmax"},
    "pc REQuant": {"per_channel": True},
}


def layer_kind(module: nn.Module) -> str:
    """``depthwise`` (groups == in_channels > 1), ``pointwise`` (1x1 conv), ``conv`` or ``linear``."""
    if isinstance(module, nn.Conv2d):
        if module.groups > 1 and module.groups == module.in_channels:
            return "depthwise"
        return "pointwise" if tuple(module.kernel_size) == (1, 1) else "conv"
    return "linear"


def sqnr_db(w: torch.Tensor, q: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum w^2 / sum (w - q)^2)`` in dB."""
    noise = float(((w - q) ** 2).sum())
    return math.inf if noise == 0.0 else 10.0 * math.log10(float((w**2).sum()) / noise)


@torch.no_grad()
def diagnose(model: nn.Module, bits: int = 8) -> list[dict[str, Any]]:
    """One row per weight layer of the BN-folded copy: kind, channels, spread
    ``max_c amax_c / median_c amax_c`` and the SQNR of each :data:`SETTINGS` entry at ``bits``."""
    folded = copy.deepcopy(model).eval()
    fold_bn_(folded)
    rows = []
    for name, module in quantizable_layers(folded):
        w = cast(torch.Tensor, module.weight).detach().float()
        axis = weight_ch_axis(module)
        amax = w.abs().transpose(0, axis).reshape(w.shape[axis], -1).amax(1)
        row: dict[str, Any] = {"layer": name, "kind": layer_kind(module), "channels": int(w.shape[axis]),
                               "spread": float(amax.max() / amax.median().clamp_min(1e-12))}
        for col, kw in SETTINGS.items():
            est = estimate_range(w, bits, symmetric=True, ch_axis=axis, name=name, **kw)
            row[col] = sqnr_db(w, est.fake_quantize(w))
        rows.append(row)
    return rows
