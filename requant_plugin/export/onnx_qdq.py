"""``export_onnx_qdq``: REQuant ranges into an explicitly quantized (Q/DQ) ONNX for TensorRT.

Route: settings (:class:`.config.ExportConfig`) -> FP32 ONNX (:mod:`.source`: TorchScript
exporter, BN folded) -> Q/DQ placement by TensorRT's fusion rules (:mod:`.placement`) ->
per-channel REQuant weight ranges written as int8 initializers (:mod:`.layers`,
:mod:`.weights`) -> per-tensor REQuant activation scales from calibration histograms
(:mod:`.calibrate`) -> Q/DQ nodes (:mod:`.qdq_graph`) -> optional float16 for the float layers
(:mod:`.fp16`) -> ``onnx.checker`` and the TensorRT rules check -> atomic write.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..deps import require
from ..ptq.report import range_table
from .atomic import write_bytes_atomic
from .attention import attention_aliases, split_attention_ranges
from .calibrate import collect_histograms, int8_scale
from .config import ExportConfig, export_config
from .layers import check_exclude, check_override_layers, quantize_plan_weights
from .placement import QdqPlan, plan_qdq
from .qdq_graph import insert_qdq
from .report import ActivationInfo, ExportReport
from .source import first_batch, load_fp32
from .trt_rules import check_tensorrt_compat
from .weights import FP16_MIN_NORMAL

__all__ = ["ExportConfig", "export_onnx_qdq"]


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise ValueError(f"path {path} is a directory; give a file name such as model.int8.onnx")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist; create it first")


def activation_scales(
    plan: QdqPlan, hists: Mapping[str, Any], *, search: str, fp16: bool
) -> dict[str, ActivationInfo]:
    """REQuant INT8 scale per calibrated tensor; inheriting tensors reuse their source's scale."""
    acts: dict[str, ActivationInfo] = {}
    for t in plan.calibrated:
        scale, alpha, amax = int8_scale(hists[t], search=search)
        if fp16:
            scale = float(np.float16(max(scale, FP16_MIN_NORMAL)))
        acts[t] = ActivationInfo(t, float(np.float32(scale)), amax, alpha, "calibrated")
    for t, src in plan.inherit.items():
        a = acts[src]
        acts[t] = ActivationInfo(t, a.scale, a.amax, a.alpha, f"inherited from {src}")
    return acts


def _checked(qdq: Any, strict: bool) -> list[Any]:
    """``onnx.checker`` (full) and the TensorRT rules on the quantized graph; raise before writing."""
    onnx = require("onnx", "requant_plugin.export")
    try:
        onnx.checker.check_model(qdq, full_check=True)
    except Exception as exc:
        raise ValueError(f"the quantized graph fails onnx.checker ({exc}); nothing was written") from exc
    violations = check_tensorrt_compat(qdq)
    errors = [v for v in violations if v.severity == "error"]
    if strict and errors:
        raise ValueError(
            "the quantized graph breaks TensorRT rules (nothing was written):\n"
            + "\n".join(f"  {v}" for v in errors)
        )
    return violations


def export_onnx_qdq(
    model: nn.Module | str | os.PathLike[str] | Any,
    calibration_data: Iterable[Any],
    path: str | os.PathLike[str],
    config: ExportConfig | None = None,
    *,
    fp32_path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> ExportReport:
    """Write an explicitly quantized ONNX (Q/DQ) with REQuant ranges, ready for TensorRT.

    Weights: REQuant's symmetric range per output channel (axis 0 Conv, 1 ConvTranspose) on the
    TensorRT grid (``scale = alpha * amax / (2**(b-1) - 1)``), stored as int8 initializers + a
    DequantizeLinear with zero point 0. ``weight_bits < 8`` keeps codes in
    ``[-2**(b-1), 2**(b-1) - 1]``; ``space="sqrt"`` snaps the transform-space levels to int8
    (first/last weighted layers stay uniform unless ``transform_first_last``). Activations:
    REQuant's per-tensor search on calibration histograms (``scale = alpha * amax / 127``),
    as Q/DQ pairs placed the way TensorRT fuses them (see :mod:`.placement`).

    Args:
        model: a torch model (exported with BN folded, dynamic batch), an FP32 ONNX path or
            ModelProto. A float16/bfloat16/float64 torch model is calibrated and exported from
            a float32 copy (the model itself is left as it is): the graph has float32
            activations, TensorRT's usual input; ``fp16=True`` makes its float layers float16.
        calibration_data: batches of inputs (tensors/arrays, or ``(x, y)`` tuples).
        path: output ``.onnx`` file, written atomically (temp file + ``os.replace``).
        config: an :class:`~.config.ExportConfig` (default: W8A8 uniform per channel, opset 17).
        fp32_path: also write the FP32 ONNX (BN folded) there, for comparisons.
        **options: :class:`~.config.ExportConfig` fields, applied over ``config`` (they win):
            ``weight_bits`` (2..8), ``act_bits`` (8), ``space``, ``granularity`` or
            ``per_channel``, ``p``, ``search``, ``transform_first_last``, ``overrides``
            (per layer any of ``bits``, ``space``, ``skip``), ``exclude`` (layer or node
            names left in float, listed in ``report.unquantized``), ``weight_ranges`` (the
            report of :func:`requant_plugin.quantize_weights`, e.g. ``recipe="beyond-tensorrt"``
            with ``fold_bn=True``, or ``{layer: RangeEstimate}``: those grids are kept and the
            codes read back exactly; a weight off its grid or an asymmetric grid raises),
            ``opset`` (13..20), ``fp16`` (opset >= 19), ``bins``, ``progress``, ``strict``.
            ``symmetric``, ``act_symmetric``, ``act_per_channel``, ``dtype`` are accepted at the
            only values TensorRT can run (True, True, False, "int8").

    Returns:
        An :class:`ExportReport`.

    Raises:
        ValueError: unsupported settings (asymmetric, unsigned, per-channel activations,
            act_bits != 8, opset outside 13..20, fp16 below opset 19), empty calibration data,
            unknown override or exclude layers, NaN/Inf, a failing ``onnx.checker`` or (strict) rule errors.
    """
    t0 = time.perf_counter()
    cfg = attention_aliases(export_config(config, **options))
    out_path = Path(path)
    _check_path(out_path)
    require("onnx", "requant_plugin.export")
    require("onnxruntime", "requant_plugin.export")
    example, batches = first_batch(calibration_data)
    fp32, names, folded = load_fp32(model, example[:1], cfg.opset)
    check_exclude(cfg.exclude, fp32, names)
    excluded = set(cfg.exclude) | cfg.skipped
    plan = plan_qdq(fp32, exclude=excluded, names=names)
    layers = [s.layer for s in plan.weighted] + [u[0] for u in plan.unquantized]
    check_override_layers(cfg.overrides, layers + list(names.values()))
    if not plan.weighted:
        raise ValueError("the model has no Conv/ConvTranspose/Gemm/MatMul layer to quantize")

    pinned = range_table(split_attention_ranges(range_table(cfg.weight_ranges)), layers + list(names.values()))
    if pinned and cfg.fp16:
        raise ValueError("weight_ranges keeps exact float32 weight scales: it cannot be combined with fp16=True")
    scale_dtype: type = np.float16 if cfg.fp16 else np.float32
    qweights, infos = quantize_plan_weights(fp32, plan, cfg, pinned, scale_dtype)

    hists, seen = collect_histograms(fp32, plan.calibrated, batches, bins=cfg.bins, progress=cfg.progress)
    acts = activation_scales(plan, hists, search=str(cfg.search), fp16=cfg.fp16)
    act_scales = {t: acts[t].scale for t in plan.activations}

    qdq = insert_qdq(fp32, plan, act_scales, qweights, scale_dtype=scale_dtype)
    if cfg.fp16:
        from .fp16 import convert_to_fp16

        qdq = convert_to_fp16(qdq)
    settings: dict[str, Any] = dict(
        cfg.settings(),
        fold_bn=folded,
        overrides=cfg.override_settings(),
        exclude=sorted(excluded),
        weight_ranges=sorted(pinned),
    )
    qdq.producer_name = "requant-plugin"
    meta = qdq.metadata_props.add()
    meta.key, meta.value = "requant_plugin.export", json.dumps(settings, default=str)
    violations = _checked(qdq, cfg.strict)
    data = qdq.SerializeToString()
    if fp32_path is not None:
        write_bytes_atomic(fp32_path, fp32.SerializeToString())
    write_bytes_atomic(out_path, data)
    return ExportReport(
        path=out_path,
        opset=cfg.opset,
        fp16=cfg.fp16,
        settings=settings,
        weights=infos,
        activations=[acts[t] for t in plan.activations],
        residual_adds=[(r.node, r.skip_index, r.skip) for r in plan.residuals],
        unquantized=list(plan.unquantized),
        violations=violations,
        file_size=len(data),
        calibration_samples=seen,
        seconds=time.perf_counter() - t0,
    )
