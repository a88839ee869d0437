"""``export_onnx_qdq``: REQuant ranges into an explicitly quantized (Q/DQ) ONNX for TensorRT.

Route: FP32 ONNX (TorchScript exporter, BN folded) -> Q/DQ placement by TensorRT's fusion
rules (:mod:`.placement`) -> per-channel REQuant weight ranges written as int8 initializers
(:mod:`.weights`) -> per-tensor REQuant activation scales from calibration histograms
(:mod:`.calibrate`) -> Q/DQ nodes (:mod:`.qdq_graph`) -> optional float16 for the float layers
(:mod:`.fp16`) -> ``onnx.checker`` and the TensorRT rules check -> atomic write.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core import check_bits, check_space
from ..core.search import check_search
from ..ptq.report import range_table
from . import _deps
from ._io import write_bytes_atomic
from .calibrate import as_batch, collect_histograms, int8_scale
from .graph import WEIGHTED_OPS, GraphIndex, label
from .placement import QdqPlan, plan_qdq
from .qdq_graph import insert_qdq
from .report import ActivationInfo, ExportReport, WeightInfo
from .trt_rules import check_tensorrt_compat
from .weights import FP16_MIN_NORMAL, QuantizedWeight, pinned_weight, quantize_weight

MIN_OPSET, MAX_OPSET, FP16_MIN_OPSET = 13, 20, 19
OVERRIDE_KEYS = frozenset({"bits", "space", "skip"})


def _validate(
    *,
    weight_bits: int,
    act_bits: int,
    space: str,
    opset: int,
    fp16: bool,
    symmetric: bool,
    act_symmetric: bool,
    act_per_channel: bool,
    dtype: str,
    search: str,
    path: Path,
) -> None:
    check_bits(weight_bits)
    check_space(space)
    check_search(search)
    if not symmetric or not act_symmetric:
        which = "weights" if not symmetric else "activations"
        raise ValueError(
            f"asymmetric {which} cannot go to TensorRT: it supports symmetric quantization only "
            "(every zero point must be 0); use symmetric=True, act_symmetric=True"
        )
    if dtype != "int8":
        raise ValueError(
            f"dtype={dtype!r} is not supported: TensorRT INT8 Q/DQ needs signed int8 with zero point 0 "
            "(uint8 is treated as int8 with a warning and breaks the ranges); use dtype='int8'"
        )
    if act_per_channel:
        raise ValueError(
            "per-channel activations are not supported by TensorRT (only constant weights "
            "may be per channel); use act_per_channel=False"
        )
    if act_bits != 8:
        raise ValueError(
            f"act_bits={act_bits}: TensorRT activations are INT8 (a QuantizeLinear clamps to [-128, 127]); "
            "lower activation bit widths cannot be expressed, use act_bits=8"
        )
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"opset={opset!r} is not supported: per-channel Q/DQ needs opset >= {MIN_OPSET} and TensorRT 10 "
            f"parses up to {MAX_OPSET}; use {MIN_OPSET}..{MAX_OPSET} (17 recommended)"
        )
    if fp16 and opset < FP16_MIN_OPSET:
        raise ValueError(
            f"fp16=True needs opset >= {FP16_MIN_OPSET} (float16 Q/DQ scales); got opset={opset}"
        )
    if path.is_dir():
        raise ValueError(f"path {path} is a directory; give a file name such as model.int8.onnx")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist; create it first")


def _first_batch(calibration_data: Iterable[Any]) -> tuple[np.ndarray, Iterable[Any]]:
    items = iter(calibration_data)
    try:
        first = next(items)
    except StopIteration:
        raise ValueError("calibration_data is empty: pass at least one batch of inputs") from None
    rest: Iterable[Any] = itertools.chain([first], items)
    try:
        n = len(calibration_data)  # type: ignore[arg-type]
        rest = _Sized(rest, n)
    except TypeError:
        pass
    return as_batch(first), rest


class _Sized:
    """An iterable with a known length (for the progress bar)."""

    def __init__(self, it: Iterable[Any], n: int) -> None:
        self.it, self.n = it, n

    def __iter__(self) -> Any:
        return iter(self.it)

    def __len__(self) -> int:
        return self.n


def _load_fp32(model: Any, example: np.ndarray, opset: int) -> tuple[Any, dict[str, str], bool]:
    onnx = _deps.onnx()
    if isinstance(model, nn.Module):
        from .torch_export import export_fp32_onnx

        return export_fp32_onnx(model, torch.from_numpy(example), opset=opset)
    proto = onnx.load(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else model
    if not hasattr(proto, "graph"):
        raise TypeError(
            f"model must be a torch nn.Module, an ONNX path or a ModelProto, got {type(model).__name__}"
        )
    ops = {n.op_type for n in proto.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"}:
        raise ValueError("the ONNX model is already quantized; pass the FP32 model")
    version = next((int(i.version) for i in proto.opset_import if i.domain in ("", "ai.onnx")), 0)
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise ValueError(
            f"the ONNX model has opset {version}; convert it to {MIN_OPSET}..{MAX_OPSET} first "
            "(onnx.version_converter.convert_version)"
        )
    return proto, {}, False


def _check_overrides(overrides: Mapping[str, Mapping[str, Any]], layers: list[str]) -> None:
    for name, ov in overrides.items():
        if name not in layers:
            raise ValueError(f"overrides names an unknown layer {name!r}; quantizable layers are: {layers}")
        bad = set(ov) - OVERRIDE_KEYS
        if bad:
            raise ValueError(
                f"overrides[{name!r}] has unknown keys {sorted(bad)}; valid: {sorted(OVERRIDE_KEYS)}"
            )
        if "bits" in ov:
            check_bits(int(ov["bits"]))
        if "space" in ov:
            check_space(str(ov["space"]))


def _check_exclude(exclude: Collection[str], fp32: Any, names: Mapping[str, str]) -> None:
    """Every ``exclude`` entry names a weighted op of ``fp32``: a layer name or an ONNX node name."""
    if isinstance(exclude, str):
        raise TypeError(f"exclude must be a list of layer names, got the string {exclude!r}; use exclude=[{exclude!r}]")
    if not exclude:
        return
    full = plan_qdq(fp32, names=names)
    layers = [s.layer for s in full.weighted]
    valid = set(layers) | set(names.values()) | {label(n) for n in fp32.graph.node if n.op_type in WEIGHTED_OPS}
    for name in exclude:
        if name not in valid:
            raise ValueError(f"exclude names an unknown layer {name!r}; quantizable layers are: {layers}")


def _quantize_weights(
    fp32: Any,
    plan: QdqPlan,
    overrides: Mapping[str, Mapping[str, Any]],
    *,
    weight_bits: int,
    space: str,
    per_channel: bool,
    p: float,
    search: str,
    transform_first_last: bool,
    scale_dtype: type,
    pinned: Mapping[str, Any],
) -> tuple[dict[str, QuantizedWeight], list[WeightInfo]]:
    """REQuant every constant weight of the plan onto the int8 grid (one entry per initializer);
    layers in ``pinned`` keep the given grid (their weights must already lie on it)."""
    index = GraphIndex(fp32)
    with_w = [s for s in plan.weighted if s.weight is not None]
    ends = {with_w[0].layer, with_w[-1].layer} if with_w else set()
    qweights: dict[str, QuantizedWeight] = {}
    infos: list[WeightInfo] = []
    for site in with_w:
        assert site.weight is not None
        ov = overrides.get(site.layer, {})
        bits = int(ov.get("bits", weight_bits))
        lspace = str(ov.get("space", space))
        if site.layer in ends and not transform_first_last and "space" not in ov:
            lspace = "uniform"
        if site.weight not in qweights:
            value = index.const_value(site.weight)
            assert value is not None
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"layer {site.layer!r} has NaN/Inf weights; fix the checkpoint or "
                    f"exclude the layer (exclude=[{site.layer!r}])"
                )
            if site.layer in pinned:
                qweights[site.weight] = pinned_weight(
                    value, pinned[site.layer], layer=site.layer, tensor=site.weight,
                    axis=site.axis if per_channel else None, scale_dtype=scale_dtype,
                )
            else:
                qweights[site.weight] = quantize_weight(
                    value,
                    layer=site.layer,
                    tensor=site.weight,
                    axis=site.axis if per_channel else None,
                    bits=bits,
                    space=lspace,
                    p=p,
                    search=search,
                    scale_dtype=scale_dtype,
                )
        qw = qweights[site.weight]
        infos.append(
            WeightInfo(
                layer=site.layer,
                node=site.node,
                op_type=site.op_type,
                tensor=site.weight,
                inputs=site.data_inputs,
                shape=tuple(qw.q.shape),
                axis=qw.axis,
                bits=qw.bits,
                space=qw.space,
                alpha=qw.alpha,
                fq_mse=qw.fq_mse,
                mse=qw.mse,
                snap_extra_mse=qw.snap_extra_mse,
                rel_mse=qw.rel_mse,
                distinct_int8=qw.distinct,
            )
        )
    return qweights, infos


def _activation_scales(
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


def export_onnx_qdq(
    model: nn.Module | str | os.PathLike[str] | Any,
    calibration_data: Iterable[Any],
    path: str | os.PathLike[str],
    *,
    weight_bits: int = 8,
    act_bits: int = 8,
    space: str = "uniform",
    per_channel: bool = True,
    opset: int = 17,
    fp16: bool = False,
    symmetric: bool = True,
    act_symmetric: bool = True,
    act_per_channel: bool = False,
    dtype: str = "int8",
    p: float = 0.5,
    search: str = "golden",
    transform_first_last: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    exclude: Collection[str] = (),
    bins: int = 2048,
    strict: bool = True,
    fp32_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
    weight_ranges: Any = None,
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
        weight_bits: 2..8; act_bits: must be 8.
        space: ``"uniform"`` or ``"sqrt"``; p, search: REQuant transform exponent and search.
        per_channel: per-channel weight scales (else per tensor).
        opset: 13..20 (17 default); fp16: float16 for the unquantized layers (opset >= 19).
        symmetric, act_symmetric, act_per_channel, dtype: only the TensorRT-compatible values
            (True, True, False, "int8") are accepted; anything else raises before any work.
        overrides: per layer name, any of ``bits``, ``space``, ``skip``.
        exclude: layer or node names of weighted ops left in float (listed in
            ``report.unquantized``); an unknown name raises.
        strict: raise (writing nothing) when the TensorRT rules check finds an error.
        fp32_path: also write the FP32 ONNX (BN folded) there, for comparisons.
        progress: tqdm bar during calibration.
        weight_ranges: keep given weight grids instead of searching: the report of
            :func:`requant_plugin.quantize_weights` (or ``{layer name: RangeEstimate}``) whose
            quantized model is ``model``, e.g. ``recipe="beyond-tensorrt"`` with
            ``fold_bn=True`` (uniform symmetric grids, zero point 0, error-feedback codes and
            bias correction included). The codes are read back exactly; a weight off its grid
            or an asymmetric grid raises.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ValueError: unsupported settings (asymmetric, unsigned, per-channel activations,
            act_bits != 8, opset outside 13..20, fp16 below opset 19), empty calibration data,
            unknown override or exclude layers, NaN/Inf, a failing ``onnx.checker`` or (strict) rule errors.
    """
    t0 = time.perf_counter()
    out_path = Path(path)
    _validate(
        weight_bits=weight_bits,
        act_bits=act_bits,
        space=space,
        opset=opset,
        fp16=fp16,
        symmetric=symmetric,
        act_symmetric=act_symmetric,
        act_per_channel=act_per_channel,
        dtype=dtype,
        search=search,
        path=out_path,
    )
    onnx = _deps.onnx()
    _deps.ort()
    example, batches = _first_batch(calibration_data)
    fp32, names, folded = _load_fp32(model, example[:1], opset)
    _check_exclude(exclude, fp32, names)
    excluded = set(exclude) | {k for k, v in (overrides or {}).items() if v.get("skip", False)}
    plan = plan_qdq(fp32, exclude=excluded, names=names)
    layers = [s.layer for s in plan.weighted] + [u[0] for u in plan.unquantized]
    _check_overrides(dict(overrides or {}), layers + list(names.values()))
    if not plan.weighted:
        raise ValueError("the model has no Conv/ConvTranspose/Gemm/MatMul layer to quantize")

    pinned = range_table(weight_ranges, layers + list(names.values()))
    if pinned and fp16:
        raise ValueError("weight_ranges keeps exact float32 weight scales: it cannot be combined with fp16=True")
    scale_dtype: type = np.float16 if fp16 else np.float32
    qweights, infos = _quantize_weights(
        fp32,
        plan,
        dict(overrides or {}),
        weight_bits=weight_bits,
        space=space,
        per_channel=per_channel,
        p=p,
        search=search,
        transform_first_last=transform_first_last,
        scale_dtype=scale_dtype,
        pinned=pinned,
    )

    hists, seen = collect_histograms(fp32, plan.calibrated, batches, bins=bins, progress=progress)
    acts = _activation_scales(plan, hists, search=search, fp16=fp16)
    act_scales = {t: acts[t].scale for t in plan.activations}

    qdq = insert_qdq(fp32, plan, act_scales, qweights, scale_dtype=scale_dtype)
    if fp16:
        from .fp16 import convert_to_fp16

        qdq = convert_to_fp16(qdq)
    settings: dict[str, Any] = dict(
        weight_bits=weight_bits,
        act_bits=act_bits,
        space=space,
        per_channel=per_channel,
        p=p,
        search=search,
        transform_first_last=transform_first_last,
        fold_bn=folded,
        overrides={k: dict(v) for k, v in (overrides or {}).items()},
        exclude=sorted(excluded),
        weight_ranges=sorted(pinned),
    )
    qdq.producer_name = "requant-plugin"
    meta = qdq.metadata_props.add()
    meta.key, meta.value = "requant_plugin.export", json.dumps(settings, default=str)
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
    data = qdq.SerializeToString()
    if fp32_path is not None:
        write_bytes_atomic(fp32_path, fp32.SerializeToString())
    write_bytes_atomic(out_path, data)
    return ExportReport(
        path=out_path,
        opset=opset,
        fp16=fp16,
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
