"""The cells of the MobileNetV2 benchmark and how each one is built and measured.

Weights-only cells reuse the accuracy tables' builders (``benchmarks.accuracy_table.run.build``:
REQuant through ``quantize_weights``, peers through ``benchmarks.harness.peers``) and the ONNX
Runtime evaluator; ``beyond`` runs ``quantize_weights(recipe="beyond")`` on the calibration
images; integer PTQ cells run the library's FX and pt2e flows and evaluate the converted model
with torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchmarks.accuracy_table.configs import METHODS, Config
from benchmarks.accuracy_table.run import build
from benchmarks.harness.evaluate import Evaluator

BITS = (8, 6, 4, 3)
PER_TENSOR = ("minmax", "percentile", "aciq", "torch_hist", "torchao_mse", "modelopt_mse", "brevitas_mse",
              "requant", "requant_sqrt")
PER_CHANNEL = ("minmax", "torchao_mse", "modelopt_mse", "brevitas_mse", "requant", "requant_sqrt")
#: the quick mode's weights-only rows
QUICK = ("minmax", "modelopt_mse", "requant", "requant_sqrt")
#: integer PTQ: (flow, granularity, method); W8A8
PTQ: tuple[tuple[str, str, str], ...] = tuple(
    (flow, gran, method)
    for flow in ("fx", "pt2e")
    for gran in ("per-tensor", "per-channel")
    for method in ("default", "requant", "requant_refined")
)
PTQ_LABEL = {"default": "torch default", "requant": "REQuant factory", "requant_refined": "REQuant, refined"}


@dataclass(frozen=True)
class Cell:
    """One measurement: weights-only (``kind="weights"``) or integer PTQ (``kind="ptq"``)."""

    model: str
    kind: str
    method: str
    bits: int = 8
    per_channel: bool = False
    flow: str = ""

    def key(self, images: int, calib: int) -> dict[str, Any]:
        return {"bench": "mobilenetv2", "model": self.model, "kind": self.kind, "method": self.method,
                "bits": self.bits, "per_channel": self.per_channel, "flow": self.flow, "images": images,
                "calib": calib}

    @property
    def label(self) -> str:
        if self.kind == "ptq":
            return f"{self.flow} {'pc' if self.per_channel else 'pt'} {PTQ_LABEL[self.method]}"
        if self.method == "beyond":
            return "beyond (REQuant, data)"
        return METHODS[self.method].label.replace("**", "")


def plan(models: tuple[str, ...], quick: bool) -> list[Cell]:
    """Every cell, most important first (so a stopped run has the headline cells): FP32, beyond and
    the paper setting at W4/W3, FX W8A8, min-max and REQuant per channel, pt2e, then the rest."""
    pt = QUICK if quick else PER_TENSOR
    pc = tuple(m for m in PER_CHANNEL if m in pt)
    bits = (4, 3) if quick else BITS
    ptq = PTQ if not quick else tuple(c for c in PTQ if c[2] != "requant_refined")
    cells: list[Cell] = []
    for m in models:
        cells.append(Cell(m, "fp32", "fp32", 32))
        cells += [Cell(m, "weights", "beyond", b, True) for b in (4, 3)]
        cells += [Cell(m, "weights", k, b) for b in (4, 3) for k in ("minmax", "requant_sqrt")]
        cells += [Cell(m, "ptq", meth, 8, gran == "per-channel", flow) for flow, gran, meth in ptq if flow == "fx"]
        cells += [Cell(m, "weights", k, b, True) for b in (4, 3) for k in ("minmax", "requant")]
        cells += [Cell(m, "ptq", meth, 8, gran == "per-channel", flow) for flow, gran, meth in ptq if flow == "pt2e"]
        cells += [Cell(m, "weights", "beyond", b, True) for b in bits]
        cells += [Cell(m, "weights", k, b) for b in bits for k in pt]
        cells += [Cell(m, "weights", k, b, True) for b in bits for k in pc]
    return list(dict.fromkeys(cells))


def build_weights(cell: Cell, fp32: nn.Module, cal: list[torch.Tensor]) -> nn.Module:
    """The weight-quantized copy of ``fp32`` for a weights-only cell (``fp32`` is not modified)."""
    if cell.method == "beyond":
        from requant_plugin import quantize_weights

        q, _ = quantize_weights(fp32, cell.bits, recipe="beyond", calibration_data=cal)
        return q
    return build(fp32, Config(cell.model, cell.method, cell.bits, per_channel=cell.per_channel))


def _fx_mapping(cell: Cell) -> Any:
    from torch.ao.quantization import QConfig
    from torch.ao.quantization.observer import default_weight_observer

    from requant_plugin import get_requant_qconfig_mapping
    from requant_plugin.observers.flows import default_mapping

    if cell.method != "default":
        return get_requant_qconfig_mapping(per_channel=cell.per_channel)
    mapping = default_mapping("x86")
    if not cell.per_channel:  # torch's per-tensor weights: symmetric min-max (default_weight_observer)
        glob = mapping.global_qconfig
        mapping.set_global(QConfig(activation=glob.activation, weight=default_weight_observer))
    return mapping


def _pt2e_quantizer(cell: Cell) -> Any:
    from requant_plugin.pt2e import get_requant_quantizer, get_torchao_default_quantization_config, make_quantizer

    if cell.method == "default":
        return make_quantizer(get_torchao_default_quantization_config(8, 8, per_channel=cell.per_channel))
    return get_requant_quantizer(8, 8, per_channel=cell.per_channel)


def build_ptq(cell: Cell, fp32: nn.Module, cal: list[torch.Tensor]) -> tuple[nn.Module, float]:
    """The converted integer model of a PTQ cell and its calibration seconds."""
    from requant_plugin.observers.flows import quantize_fx, quantize_pt2e

    refine = cell.method == "requant_refined"
    if cell.flow == "fx":
        return quantize_fx(fp32, _fx_mapping(cell), cal, "x86", refine=refine)
    return quantize_pt2e(fp32, _pt2e_quantizer(cell), cal, refine=refine)


def measure(cell: Cell, fp32: nn.Module, cal: list[torch.Tensor], ev: Evaluator) -> dict[str, Any]:
    """Top-1 (%) and the seconds spent quantizing (calibration included) for one cell."""
    t0 = time.perf_counter()
    if cell.kind == "fp32":
        return {"acc": ev.accuracy(fp32), "quant_s": 0.0}
    if cell.kind == "weights":
        q = build_weights(cell, fp32, cal)
        secs = time.perf_counter() - t0
        return {"acc": ev.accuracy(q), "quant_s": round(secs, 3)}
    q, calib_s = build_ptq(cell, fp32, cal)
    secs = time.perf_counter() - t0
    return {"acc": ev.accuracy(q, "torch"), "quant_s": round(secs, 3), "calib_s": round(calib_s, 3)}
