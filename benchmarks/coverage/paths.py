"""The library paths of the coverage matrix: each takes a model copy and the calibration batches and
returns the quantized model's outputs on the test inputs (a float tensor), or raises.

A path raises :class:`CellFailure` for a wrong result the library did not report itself (an ONNX
Runtime output that disagrees with the PyTorch fake-quant model, a TensorRT rule error in the
written file, a graph with nothing quantized).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

#: the weights-only paths run at the recipes' default bit width (the paper's W4)
WEIGHT_BITS = 4


class CellFailure(Exception):
    """A wrong result that no library call reported (status ``failure``)."""


@dataclass(frozen=True)
class Inputs:
    """The random inputs of one architecture: calibration batches and the test batch."""

    calibration: list[torch.Tensor]
    test: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.test.shape[1:])


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y = model(x)
    if isinstance(y, tuple | list):  # e.g. inception's (logits, aux) outside eval mode
        y = y[0]
    if not isinstance(y, torch.Tensor):
        raise CellFailure(f"the quantized model returned {type(y).__name__}, not a tensor")
    return y.float()


def _weights(options: dict[str, Any], data: bool = False) -> Callable[[nn.Module, Inputs], torch.Tensor]:
    def run(model: nn.Module, inputs: Inputs) -> torch.Tensor:
        from requant_plugin import quantize_weights

        opts = dict(options)
        if opts.get("recipe") == "data-free":
            opts["input_shape"] = inputs.shape
        qmodel, report = quantize_weights(model, WEIGHT_BITS, inputs.calibration if data else None, **opts)
        if not report.layers:
            raise CellFailure("quantize_weights quantized no layer")
        return _forward(qmodel, inputs.test)

    return run


def _fx(model: nn.Module, inputs: Inputs) -> torch.Tensor:
    from requant_plugin.observers.flows import check_quantized, quantize_fx
    from requant_plugin.qconfig import get_requant_qconfig_mapping

    quantized, _ = quantize_fx(model, get_requant_qconfig_mapping(8, 8, backend="x86"), inputs.calibration, "x86")
    if check_quantized(quantized) == 0:
        raise CellFailure("convert_fx left no quantized Conv2d/Linear module")
    return _forward(quantized, inputs.test)


def _pt2e(backend: str, weight_bits: int) -> Callable[[nn.Module, Inputs], torch.Tensor]:
    def run(model: nn.Module, inputs: Inputs) -> torch.Tensor:
        from requant_plugin.observers.flows import count_qdq, quantize_pt2e
        from requant_plugin.pt2e import get_requant_quantizer

        quantizer = get_requant_quantizer(weight_bits=weight_bits, act_bits=8, backend=backend)
        quantized, _ = quantize_pt2e(model, quantizer, inputs.calibration)
        if not count_qdq(quantized):
            raise CellFailure("convert_pt2e left no quantize/dequantize node")
        return _forward(quantized, inputs.test)

    return run


def check_ort(result: dict[str, Any]) -> None:
    """Raise :class:`CellFailure` unless ONNX Runtime computes the fake-quant model's int8 codes
    (teacher forced: every code equal up to float32 rounding ties, at most one code apart)."""
    tf = result["teacher_forced"]
    if tf["sites_not_in_reference"]:
        missing = tf["sites_not_in_reference"][:3]
        raise CellFailure(f"ORT mismatch: Q/DQ sites missing in the fake-quant model: {missing}")
    if tf["unexplained"] or tf["max_code_diff"] > 1:
        raise CellFailure(f"ORT mismatch: {tf['unexplained']} of {tf['codes']} int8 codes differ from the "
                          f"fake-quant model beyond rounding ties (max code difference {tf['max_code_diff']})")


def _onnx(model: nn.Module, inputs: Inputs) -> torch.Tensor:
    from requant_plugin.export import check_tensorrt_compat, export_onnx_qdq, fake_quant_reference, ort_predict
    from requant_plugin.export.verify import compare_with_reference

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.int8.onnx"
        report = export_onnx_qdq(model, inputs.calibration, path)
        errors = [v for v in check_tensorrt_compat(path) if v.severity == "error"]
        if errors:
            raise CellFailure(f"TensorRT rules check: {len(errors)} errors, first: {errors[0]}")
        check_ort(compare_with_reference(path, fake_quant_reference(model, report), inputs.test))
        out = ort_predict(path, inputs.test.numpy())
    return torch.from_numpy(np.asarray(out, np.float32))


#: path name -> runner; the order of the table's columns
PATHS: dict[str, Callable[[nn.Module, Inputs], torch.Tensor]] = {
    "qw_paper": _weights({"recipe": "paper"}),
    "qw_per_channel": _weights({"per_channel": True}),
    "qw_beyond": _weights({"recipe": "beyond"}, data=True),
    "qw_data_free": _weights({"recipe": "data-free"}),
    "fx_w8a8": _fx,
    "pt2e_x86_w8a8": _pt2e("x86_inductor", 8),
    "pt2e_x86_w4a8": _pt2e("x86_inductor", 4),
    "pt2e_xnnpack_w8a8": _pt2e("xnnpack", 8),
    "pt2e_xnnpack_w4a8": _pt2e("xnnpack", 4),
    "onnx_qdq": _onnx,
}

#: one line per path, for the doc
DESCRIPTIONS: dict[str, str] = {
    "qw_paper": f'`quantize_weights(m, {WEIGHT_BITS}, recipe="paper")`: per-tensor sqrt-space weights, no data',
    "qw_per_channel": f"`quantize_weights(m, {WEIGHT_BITS}, per_channel=True)`: the default config per channel",
    "qw_beyond": f'`quantize_weights(m, {WEIGHT_BITS}, calibration, recipe="beyond")`: output objective, '
                 "error-feedback rounding, bias correction",
    "qw_data_free": f'`quantize_weights(m, {WEIGHT_BITS}, recipe="data-free", input_shape=...)`: BN-statistics '
                    "bias correction",
    "fx_w8a8": '`quantize_fx(m, get_requant_qconfig_mapping(8, 8, backend="x86"), calibration)`: torch.ao FX, '
               "int8 x86 kernels",
    "pt2e_x86_w8a8": '`quantize_pt2e(m, get_requant_quantizer(weight_bits=8, backend="x86_inductor"), ...)`',
    "pt2e_x86_w4a8": '`quantize_pt2e(m, get_requant_quantizer(weight_bits=4, backend="x86_inductor"), ...)`',
    "pt2e_xnnpack_w8a8": '`quantize_pt2e(m, get_requant_quantizer(weight_bits=8, backend="xnnpack"), ...)`',
    "pt2e_xnnpack_w4a8": '`quantize_pt2e(m, get_requant_quantizer(weight_bits=4, backend="xnnpack"), ...)`',
    "onnx_qdq": "`export_onnx_qdq(m, calibration, path)` (W8A8), `check_tensorrt_compat`, ONNX Runtime "
                "(`ORT_DISABLE_ALL`) against `fake_quant_reference` code by code; output from ORT",
}

#: paths whose quantized model is W8A8 end to end (the tight error bound of the CI test)
W8A8_PATHS = ("fx_w8a8", "pt2e_x86_w8a8", "pt2e_xnnpack_w8a8", "onnx_qdq")
