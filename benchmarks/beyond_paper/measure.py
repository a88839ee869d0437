"""Measuring one configuration of the beyond-the-paper benchmark: quantize, evaluate, storage size,
mixed precision and the calibration time of ResNet-56."""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import torch
from torch import nn

from benchmarks.beyond_paper.rows import MIXED_CANDIDATES
from benchmarks.harness.data import load_fp32
from benchmarks.harness.evaluate import Evaluator
from requant_plugin import estimate_range, quantize_weights
from requant_plugin.ptq import quantizable_layers, weight_ch_axis


def _kwargs(row_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The row keywords as ``quantize_weights`` takes them (a JSON list of ``p`` -> a tuple)."""
    kw = dict(row_kwargs)
    if isinstance(kw.get("p"), list):
        kw["p"] = tuple(kw["p"])
    return kw


@torch.no_grad()
def snap_to_int8(model: nn.Module) -> nn.Module:
    """Snap every quantized weight to a per-channel symmetric INT8 TensorRT grid (amax/127)."""
    out = copy.deepcopy(model)
    for name, module in quantizable_layers(out):
        w: torch.Tensor = module.weight  # type: ignore[assignment]
        est = estimate_range(w.detach(), 8, symmetric=True, per_channel=True, ch_axis=weight_ch_axis(module),
                             search="minmax", convention="tensorrt", name=name)
        w.copy_(est.fake_quantize(w.detach()))
    return out


def size_bits(model: nn.Module, report: Any) -> int:
    """Storage of the quantized model in bits.

    Quantized weights: ``bits`` per value, plus per range a float32 scale and an 8-bit zero
    point (and a float32 normaliser ``m`` when the transform is used). Everything else the
    forward pass needs (biases, including those added by bias correction, and the BN affine
    parameters) in float32; BN running statistics are not counted (they fold into the affine).
    """
    total = 0
    quantized = set()
    for lr in report.layers:
        module = model.get_submodule(lr.name)
        weight: torch.Tensor = module.weight  # type: ignore[assignment]
        quantized.add(id(weight))
        ranges = lr.shape[weight_ch_axis(module)] if report.settings.get("per_channel") else 1
        est = getattr(lr, "estimate", None)
        if est is not None:
            ranges = int(est.scale.numel())
        per_range = 32 + 8 + (32 if lr.space == "sqrt" else 0)
        total += int(weight.numel()) * lr.bits + ranges * per_range
    for p in model.parameters():
        if id(p) not in quantized:
            total += 32 * p.numel()
    return total


def fp32_bits(model: nn.Module) -> int:
    """32 bits per parameter."""
    return 32 * sum(p.numel() for p in model.parameters())


def run_one(name: str, model: nn.Module, bits: int, row_kwargs: dict[str, Any], snap: bool, needs_data: bool,
            cal: list[torch.Tensor], evaluator: Evaluator) -> dict[str, Any]:
    """Top-1, seconds, storage and mean relative output MSE of ``quantize_weights(model, bits, **row_kwargs)``."""
    kw = _kwargs(row_kwargs)
    if kw.get("bias_correction") == "bn" and not needs_data:
        kw["input_shape"] = (3, 32, 32)
    t0 = time.perf_counter()
    q, rep = quantize_weights(model, bits, calibration_data=cal if needs_data else None, **kw)
    secs = time.perf_counter() - t0
    if snap:
        q = snap_to_int8(q)
    rel = [float(r) for r in (getattr(x, "rel_output_mse", None) for x in rep.layers) if r is not None]
    return dict(
        acc=evaluator.accuracy(q), seconds=secs, size_bits=size_bits(q, rep),
        mean_rel_output_mse=(sum(rel) / len(rel)) if rel else None, n_layers_out=len(rel),
    )



def run_mixed(model: nn.Module, budget: float, cal: list[torch.Tensor], evaluator: Evaluator,
              sensitivity: str = "network") -> dict[str, Any]:
    """``"beyond"`` with per-layer bits from :func:`allocate_bits` under ``budget`` bits/weight."""
    from requant_plugin.ptq import weight_counts, width_summary
    from requant_plugin.ptq.presets import allocate_bits, layer_error_curves

    t0 = time.perf_counter()
    curves = layer_error_curves(model, cal, MIXED_CANDIDATES, sensitivity=sensitivity)
    sizes = weight_counts(model, curves)
    bits = allocate_bits(curves, sizes, budget)
    q, rep = quantize_weights(model, 4, recipe="beyond", calibration_data=cal,
                              overrides={n: {"bits": b} for n, b in bits.items()})
    secs = time.perf_counter() - t0
    counts, mean_bits = width_summary(bits, sizes)
    hist = {str(b): k for b, k in counts.items()}
    return dict(acc=evaluator.accuracy(q), seconds=secs, size_bits=size_bits(q, rep), mean_bits=mean_bits,
                histogram=hist)


def measure_time(cal: list[torch.Tensor], threads: int) -> dict[str, Any]:
    """Wall time of ``quantize_weights(resnet56, 4, recipe="beyond")`` (calibration included)."""
    model = load_fp32("resnet56")
    load = os.getloadavg()[0]
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        quantize_weights(model, 4, recipe="beyond", calibration_data=cal)
        best = min(best, time.perf_counter() - t0)
    return dict(seconds=best, threads=threads, load=load, load_after=os.getloadavg()[0])


_FP32_KIB: dict[str, float] = {}


def sweep_fp32_kib(m: str) -> float:
    """The FP32 size of model ``m`` in KiB (cached per model)."""
    if m not in _FP32_KIB:
        _FP32_KIB[m] = fp32_bits(load_fp32(m)) / 8192
    return _FP32_KIB[m]
