"""Weights-only W4 diagnostics: per-channel symmetric fake quantization of the BN-folded model
with min-max and the REQuant weight observers, whole model and one layer at a time."""

from __future__ import annotations

import copy
from typing import Any

import torch

from requant_plugin.data import evaluate_accuracy


def _fake_quant_weights(model: torch.nn.Module, make_observer: Any) -> tuple[torch.nn.Module, float]:
    """Per-channel fake quantization of every Conv/Linear weight of ``model`` (a copy) with the
    observer ``make_observer()``; returns the copy and the summed per-layer weight MSE."""
    from requant_plugin.ptq import quantizable_layers

    out = copy.deepcopy(model)
    total = 0.0
    for _name, mod in quantizable_layers(out):
        obs = make_observer()
        weight: Any = mod.weight
        w = weight.detach()
        obs(w)
        scale, zp = obs.calculate_qparams()
        wq = torch.fake_quantize_per_channel_affine(w, scale.float(), zp.int(), 0, obs.quant_min, obs.quant_max)
        total += float(((wq - w) ** 2).mean())
        with torch.no_grad():
            weight.copy_(wq)
    return out, total


def weight_diagnostics(task: Any, bits: int = 4, per_layer: bool = True) -> dict[str, Any]:
    """Weights-only W``bits`` per-channel symmetric fake quantization of the BN-folded model:
    accuracy and weight MSE of min-max, REQuant (uniform) and the sqrt-space range, and per layer
    (one layer quantized at a time) the output (logit) MSE on 500 test images."""
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    from requant_plugin.observers import RELU_MEAN_RATIO, PerChannelREQuantObserver
    from requant_plugin.ptq import fold_bn_, quantizable_layers

    folded = copy.deepcopy(task.model).eval()
    fold_bn_(folded)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    kw = {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric, "quant_min": lo, "quant_max": hi}
    makers = {
        "minmax": lambda: PerChannelMinMaxObserver(**kw),
        "requant": lambda: PerChannelREQuantObserver(**kw),
        "requant_sqrt": lambda: PerChannelREQuantObserver(space="sqrt", **kw),
        "requant_coherent": lambda: PerChannelREQuantObserver(input_mean_ratio=RELU_MEAN_RATIO, **kw),
    }
    res: dict[str, Any] = {"bits": bits}
    for key, make in makers.items():
        model, wmse = _fake_quant_weights(folded, make)
        res[key] = {"acc": evaluate_accuracy(model, task.test), "weight_mse": wmse}
    if per_layer:
        x = torch.cat([b[0] for b in task.test])[:500]
        with torch.no_grad():
            ref = folded(x)
        rows = []
        for name, _ in quantizable_layers(folded):
            row: dict[str, Any] = {"layer": name}
            for key in ("minmax", "requant", "requant_coherent"):
                one = copy.deepcopy(folded)
                mod: Any = one.get_submodule(name)
                obs = makers[key]()
                obs(mod.weight.detach())
                scale, zp = obs.calculate_qparams()
                with torch.no_grad():
                    wq = torch.fake_quantize_per_channel_affine(mod.weight, scale.float(), zp.int(), 0, lo, hi)
                    row[f"{key}_wmse"] = float(((wq - mod.weight) ** 2).mean())
                    mod.weight.copy_(wq)
                    row[f"{key}_out_mse"] = float(((one(x) - ref) ** 2).mean())
            rows.append(row)
        res["layers"] = rows
    return res
