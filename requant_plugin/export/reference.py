"""A PyTorch fake-quant model that computes what the Q/DQ ONNX computes, for exactness checks.

Built from the torch model (not from the ONNX graph): BatchNorm is folded as in the export,
each quantized layer becomes ``layer(fq(x))`` with its weight replaced by the int8 weight of
the ONNX file dequantized in float32 (``s * q``), and each quantized residual Add gets ``fq``
on its skip input (Adds matched to the ONNX ones in execution order with ``torch.fx``).
``fq(x) = clamp(round_half_even(x / s), -128, 127) * s`` in float32 with a true division, as
ONNX Runtime's QuantizeLinear computes it.

Every ``fq`` is an :class:`ActQuant` module named after its ONNX tensor. Inside
:func:`recording`, they record their input and int8 codes and can be *forced* to return given
values (for example ONNX Runtime's DequantizeLinear outputs): this "teacher forcing" compares
each quantized tensor's codes layer by layer, free of the float32 summation-order noise that
makes deep-network outputs of two runtimes differ in the last bits.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn

from ..deps import require
from ..ptq import fold_bn_
from ..ptq.residual_correction import is_tensor_add
from .attention import attach_matmul_quantizers, mha_fastpath_off
from .graph import GraphIndex, attr, label, scope_name
from .report import ExportReport, WeightInfo
from .torch_export import export_copy


@dataclass
class Recorder:
    """What :class:`ActQuant` modules saw: input ``x`` and codes per tensor; ``forced`` outputs."""

    forced: Mapping[str, torch.Tensor] = field(default_factory=dict)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    codes: dict[str, torch.Tensor] = field(default_factory=dict)


_ACTIVE: list[Recorder] = []


@contextlib.contextmanager
def recording(forced: Mapping[str, torch.Tensor] | None = None) -> Iterator[Recorder]:
    """Record every :class:`ActQuant` call; ``forced[name]`` replaces that tensor's output."""
    rec = Recorder(forced=dict(forced or {}))
    _ACTIVE.append(rec)
    try:
        yield rec
    finally:
        _ACTIVE.remove(rec)


def quantize_codes(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``clamp(round_half_even(x / s), -128, 127)`` in float32 (true division, not ``x * (1/s)``)."""
    s = torch.full([1] * max(x.dim(), 1), float(np.float32(scale)), dtype=x.dtype, device=x.device)
    return torch.clamp(torch.round(x / s), -128, 127)


def fake_quant(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``quantize_codes(x, s) * s`` (QuantizeLinear then DequantizeLinear, zero point 0)."""
    return quantize_codes(x, scale) * float(np.float32(scale))


class ActQuant(nn.Module):
    """Per-tensor INT8 fake quantization of the ONNX tensor ``tensor`` with ``scale``."""

    def __init__(self, tensor: str, scale: float) -> None:
        super().__init__()
        self.tensor = tensor
        self.scale = float(np.float32(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = quantize_codes(x, self.scale)
        for rec in _ACTIVE:
            rec.inputs[self.tensor] = x.detach()
            rec.codes[self.tensor] = q.detach()
            if self.tensor in rec.forced:
                return rec.forced[self.tensor].to(x.dtype)
        return q * self.scale

    def extra_repr(self) -> str:
        return f"tensor={self.tensor!r}, scale={self.scale:.6g}"


class FakeQuantLayer(nn.Module):
    """``layer(act(x))`` with ``layer.weight`` replaced by ``weight`` (a dequantized int8 tensor)."""

    def __init__(self, layer: nn.Module, act: ActQuant, weight: torch.Tensor) -> None:
        super().__init__()
        self.act = act
        self.layer = copy.deepcopy(layer)
        old = self.layer.weight
        assert isinstance(old, torch.Tensor)
        self.layer.weight = nn.Parameter(weight.to(old.dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layer(self.act(x))
        return out


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (FakeQuantLayer, ActQuant)):
            return True
        if any(isinstance(c, FakeQuantLayer) for c in m.modules()):  # e.g. nn.TransformerEncoder
            return False
        return super().is_leaf_module(m, qualname)


def _initializers(proto: Any) -> dict[str, np.ndarray]:
    onnx = require("onnx", "requant_plugin.export")
    return {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}


def _transposed(node: Any, weight: torch.Tensor, old: torch.Tensor) -> bool:
    """Whether the ONNX weight is the layer's weight transposed: MatMul's B ``[in, out]``, Gemm's
    B with ``transB=0`` (by the node, so square weights are not missed), else by shape."""
    if node is not None and weight.dim() == 2 and node.op_type in ("MatMul", "Gemm"):
        return node.op_type == "MatMul" or not int(attr(node, "transB", 0))
    return tuple(weight.shape) != tuple(old.shape)


def _activation_matmuls(proto: Any) -> dict[str, list[tuple[str | None, str | None]]]:
    """Module scope -> the MatMuls of two activations in it, in graph order, as the quantized
    tensors read by their inputs (``None`` for an input without Q/DQ)."""
    index = GraphIndex(proto)

    def source(t: str) -> str | None:
        dq = index.producer.get(t)
        q = index.producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        return str(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None

    def constant(t: str) -> bool:
        dq = index.producer.get(t)
        return index.is_constant(t) or (dq is not None and dq.op_type == "DequantizeLinear"
                                        and index.is_constant(dq.input[0]))

    out: dict[str, list[tuple[str | None, str | None]]] = {}
    for node in proto.graph.node:
        if node.op_type == "MatMul" and not any(constant(t) for t in node.input[:2]):
            out.setdefault(scope_name(node.name), []).append((source(node.input[0]), source(node.input[1])))
    return out


def _weight_holders(model: nn.Module) -> dict[str, list[str]]:
    """Module name -> names of all modules holding the same ``weight`` tensor (tied weights)."""
    by_id: dict[int, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        w = getattr(mod, "weight", None)
        if isinstance(w, torch.Tensor):
            by_id.setdefault(id(w), []).append(name)
    return {name: names for names in by_id.values() for name in names}


def _module_for(model: nn.Module, w: WeightInfo, holders: Mapping[str, list[str]], done: set[str]) -> str:
    """The module of ``model`` that runs the ONNX node of ``w``: ``w.layer`` itself, or, for a
    weight shared by several layers (named after the first), the sharing layer of the node."""
    try:
        model.get_submodule(w.layer)
    except AttributeError as exc:
        raise ValueError(
            f"layer {w.layer!r} of the export (node {w.node!r}) is not a module of the model: a functional call "
            "on a raw parameter (F.conv2d(x, self.weight) or F.linear) or a module called more than once, with a "
            "BatchNorm folded per call (one layer per call); the fake-quant reference models Conv/Linear modules, "
            "one call each: compare the export with ONNX Runtime only (verify_export without model=), or hold "
            "that weight in an nn.Conv2d/nn.Linear module") from exc
    free = [n for n in holders.get(w.layer, [w.layer]) if n not in done]
    scoped = scope_name(w.node)
    if scoped in free:
        return scoped
    if w.layer in free:
        return w.layer
    if free:
        return free[0]
    raise ValueError(
        f"node {w.node!r} reuses the weight of layer {w.layer!r} but no other module holds that weight "
        "(a module called twice): the fake-quant reference models one call per layer; "
        "compare the export with ONNX Runtime only (verify_export without model=)"
    )


def fake_quant_reference(model: nn.Module, report: ExportReport) -> nn.Module:
    """The fake-quant twin of the float32 Q/DQ ONNX file at ``report.path``.

    Works on a float32 copy of ``model`` (``model`` itself is not modified) with each
    ``nn.MultiheadAttention`` written out as in the export (:mod:`.attention`), whose activation
    MatMuls get the file's input quantizers; layers sharing one weight tensor (tied weights) each
    get their own activation quantizer. Raises ValueError for
    fp16 exports, when a layer is missing, or when the residual Adds of the model and of the
    ONNX graph do not line up.
    """
    if report.fp16:
        raise ValueError("the fake-quant reference models float32 graphs only (export with fp16=False)")
    onnx = require("onnx", "requant_plugin.export")
    proto = onnx.load(os.fspath(report.path))
    ref = export_copy(model)
    if report.settings.get("fold_bn", True):
        with mha_fastpath_off():
            fold_bn_(ref)
    inits = _initializers(proto)
    scales = report.act_scales
    holders = _weight_holders(ref)
    nodes = {label(n): n for n in proto.graph.node}
    done: set[str] = set()
    for w in report.weights:
        name = _module_for(ref, w, holders, done)
        layer = ref.get_submodule(name)
        q = inits[f"{w.tensor}_quantized"].astype(np.float32)
        s = inits[f"{w.tensor}_scale"].astype(np.float32)
        if s.ndim == 1 and w.axis is not None:
            shape = [1] * q.ndim
            shape[w.axis] = -1
            s = s.reshape(shape)
        weight = torch.from_numpy(np.ascontiguousarray(q * s))
        old = layer.weight
        if not isinstance(old, torch.Tensor):
            raise ValueError(f"layer {w.layer!r} has no weight tensor")
        if _transposed(nodes.get(w.node), weight, old):
            weight = weight.t().contiguous()
        wrapped = FakeQuantLayer(layer, ActQuant(w.inputs[0], scales[w.inputs[0]]), weight)
        done.add(name)
        parent, _, child = name.rpartition(".")
        setattr(ref.get_submodule(parent) if parent else ref, child, wrapped)
    attach_matmul_quantizers(ref, _activation_matmuls(proto), lambda t: ActQuant(t, scales[t]))
    with mha_fastpath_off():
        graph = _Tracer().trace(ref)
    adds = [n for n in graph.nodes if is_tensor_add(n)]
    if len(adds) != len(report.residual_adds):
        raise ValueError(
            f"the model has {len(adds)} tensor additions but the ONNX graph "
            f"{len(report.residual_adds)}: cannot align the residual Q/DQ"
        )
    for k, (node, (_, skip_index, skip)) in enumerate(zip(adds, report.residual_adds, strict=False)):
        if skip_index is None or skip is None:
            continue
        slots = [j for j, a in enumerate(node.args) if isinstance(a, torch.fx.Node)]
        j = slots[skip_index]
        name = f"residual_skip_quant_{k}"
        ref.add_module(name, ActQuant(skip, scales[skip]))
        with graph.inserting_before(node):
            fq = graph.call_module(name, (node.args[j],))
        args = list(node.args)
        args[j] = fq
        node.args = tuple(args)
    graph.lint()
    return torch.fx.GraphModule(ref, graph).eval()
