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
import operator
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
from torch import nn

from ..deps import require
from ..ptq import fold_bn_
from .report import ExportReport, WeightInfo
from .torch_export import float32_copy


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
        return isinstance(m, (FakeQuantLayer, ActQuant)) or super().is_leaf_module(m, qualname)


def _is_add(node: torch.fx.Node) -> bool:
    tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
    if len(tensors) != 2:
        return False
    if node.op == "call_function":
        return node.target in (operator.add, operator.iadd, torch.add)
    return node.op == "call_method" and node.target in ("add", "add_")


def _initializers(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    onnx = require("onnx", "requant_plugin.export")
    proto = onnx.load(os.fspath(path))
    return {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}


def _weight_holders(model: nn.Module) -> dict[str, list[str]]:
    """Module name -> names of all modules holding the same ``weight`` tensor (tied weights)."""
    by_id: dict[int, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        w = getattr(mod, "weight", None)
        if isinstance(w, torch.Tensor):
            by_id.setdefault(id(w), []).append(name)
    return {name: names for names in by_id.values() for name in names}


def _scope_name(node: str) -> str:
    """Module qualname of a TorchScript-exported node name (``/layer1/layer1.0/conv1/Conv``)."""
    path = ""
    for part in node.split("/")[1:-1]:
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return path


def _module_for(model: nn.Module, w: WeightInfo, holders: Mapping[str, list[str]], done: set[str]) -> str:
    """The module of ``model`` that runs the ONNX node of ``w``: ``w.layer`` itself, or, for a
    weight shared by several layers (named after the first), the sharing layer of the node."""
    try:
        model.get_submodule(w.layer)
    except AttributeError as exc:
        raise ValueError(f"layer {w.layer!r} of the export is not a module of the model") from exc
    free = [n for n in holders.get(w.layer, [w.layer]) if n not in done]
    scoped = _scope_name(w.node)
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

    Works on a float32 copy of ``model`` (``model`` itself is not modified); layers sharing one
    weight tensor (tied weights) each get their own activation quantizer. Raises ValueError for
    fp16 exports, when a layer is missing, or when the residual Adds of the model and of the
    ONNX graph do not line up.
    """
    if report.fp16:
        raise ValueError("the fake-quant reference models float32 graphs only (export with fp16=False)")
    ref = float32_copy(model)
    if report.settings.get("fold_bn", True):
        fold_bn_(ref)
    inits = _initializers(report.path)
    scales = report.act_scales
    holders = _weight_holders(ref)
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
        if tuple(weight.shape) != tuple(old.shape):
            weight = weight.t().contiguous()
        wrapped = FakeQuantLayer(layer, ActQuant(w.inputs[0], scales[w.inputs[0]]), weight)
        done.add(name)
        parent, _, child = name.rpartition(".")
        setattr(ref.get_submodule(parent) if parent else ref, child, wrapped)
    graph = _Tracer().trace(ref)
    adds = [n for n in graph.nodes if _is_add(n)]
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
