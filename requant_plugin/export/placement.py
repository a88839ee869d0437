"""Where the Q/DQ pairs go so that TensorRT fuses them (explicit quantization).

Rules (TensorRT "Q/DQ layer placement recommendations", as implemented by ModelOpt):

* every input of a weighted op (Conv, ConvTranspose, Gemm, MatMul) is quantized: the
  activation per tensor, the constant weight per channel on its output axis;
* outputs of weighted ops are never quantized, so nothing sits between Conv -> BN -> ReLU;
* on a residual ``Add`` only the skip input is quantized: the branch coming straight from a
  weighted op stays float so TensorRT fuses the Add (and a following ReLU) into that op. When
  both inputs come from weighted ops, the shallower one (fewer ops from the graph input, the
  shortcut) is the skip;
* a tensor gets one Q/DQ pair shared by all its quantized consumers;
* a quantized tensor reached from another quantized tensor through value-preserving ops
  (Slice, Pad with zeros, Reshape, MaxPool, ...) reuses that tensor's scale, so the two
  grids agree and TensorRT can move the Q/DQ through those ops.

The plan is pure graph analysis keyed by ONNX tensor names; :mod:`.qdq_graph` applies it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .graph import PASSTHROUGH_OPS, WEIGHTED_OPS, GraphIndex, attr, label, weight_axis

SHAPE_OPS = ("Shape", "ConstantOfShape", "Constant", "Range", "Size", "NonZero")


@dataclass(frozen=True)
class WeightedSite:
    """A weighted op that gets Q/DQ on its inputs.

    Attributes:
        node: ONNX node name.
        op_type: Conv, ConvTranspose, Gemm or MatMul.
        layer: layer name (the weight initializer's name without ``.weight``, else the node).
        data_inputs: activation tensors quantized per tensor.
        weight: constant weight tensor (None for a MatMul of two activations).
        axis: output-channel axis of the weight.
    """

    node: str
    op_type: str
    layer: str
    data_inputs: tuple[str, ...]
    weight: str | None
    axis: int | None


@dataclass(frozen=True)
class ResidualSite:
    """An ``Add`` of two activations and which input (if any) gets the Q/DQ."""

    node: str
    inputs: tuple[str, str]
    skip_index: int | None
    reason: str

    @property
    def skip(self) -> str | None:
        """The quantized (skip) input tensor, or None."""
        return None if self.skip_index is None else self.inputs[self.skip_index]


@dataclass
class QdqPlan:
    """The placement: weighted sites, residual Adds, quantized tensors and float ops."""

    weighted: list[WeightedSite] = field(default_factory=list)
    residuals: list[ResidualSite] = field(default_factory=list)
    activations: list[str] = field(default_factory=list)
    inherit: dict[str, str] = field(default_factory=dict)
    unquantized: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def calibrated(self) -> list[str]:
        """Quantized tensors whose scale comes from calibration (not inherited)."""
        return [t for t in self.activations if t not in self.inherit]


def layer_name(weight: str | None, node: Any) -> str:
    """``layer1.0.conv1`` for weight ``layer1.0.conv1.weight``, else the node's label."""
    if weight and weight.endswith(".weight"):
        return weight[: -len(".weight")]
    return label(node)


def _depths(index: GraphIndex) -> dict[str, int]:
    """Longest path (in ops) from a graph input to every tensor."""
    depth: dict[str, int] = {name: 0 for name in index.graph_inputs}
    for node in index.model.graph.node:
        d = max((depth.get(i, 0) for i in node.input if i), default=0) + 1
        for out in node.output:
            depth[out] = d
    return depth


def _origin(index: GraphIndex, tensor: str) -> Any:
    """Producer of ``tensor`` seen through BatchNormalization (TensorRT folds BN)."""
    node = index.producer.get(tensor)
    while node is not None and node.op_type == "BatchNormalization":
        node = index.producer.get(node.input[0])
    return node


def _passthrough_source(index: GraphIndex, tensor: str) -> str | None:
    """The tensor ``tensor`` is copied/selected/zero-padded from, if its producer only moves values."""
    node = index.producer.get(tensor)
    if node is None or node.op_type not in PASSTHROUGH_OPS or not node.input:
        return None
    if node.op_type == "Pad":
        if attr(node, "mode", b"constant") not in (b"constant", "constant"):
            return None
        if len(node.input) > 2 and node.input[2]:
            value = index.const_value(node.input[2])
            if value is None or np.any(value != 0):
                return None
    if node.op_type == "Gather" and index.is_constant(node.input[0]):
        return None
    return str(node.input[0])


def plan_qdq(model: Any, *, exclude: Collection[str] = (), names: Mapping[str, str] | None = None) -> QdqPlan:
    """Compute the Q/DQ placement for ``model`` (an ``onnx.ModelProto``).

    Args:
        model: FP32 ONNX model (BatchNorm may be folded or not).
        exclude: layer names (see :func:`layer_name`) or node names to leave in float.
        names: weight initializer -> layer name (overrides :func:`layer_name`).
    """
    index = GraphIndex(model)
    plan = QdqPlan()
    excluded = set(exclude)
    quantized_nodes: set[int] = set()
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        weight = node.input[1] if len(node.input) > 1 else None
        const_w = weight is not None and index.is_constant(weight)
        name = layer_name(weight if const_w else None, node)
        if const_w and names and weight is not None and weight in names:
            name = names[weight]
        if name in excluded or label(node) in excluded:
            plan.unquantized.append((label(node), node.op_type, "excluded by the caller"))
            continue
        if index.is_constant(node.input[0]):
            plan.unquantized.append((label(node), node.op_type, "first input is a constant"))
            continue
        if node.op_type == "Gemm" and int(attr(node, "transA", 0)):
            plan.unquantized.append((label(node), node.op_type, "Gemm with transA=1 is kept float"))
            continue
        if node.op_type == "ConvTranspose" and int(attr(node, "group", 1)) != 1:
            plan.unquantized.append(
                (
                    label(node),
                    node.op_type,
                    "grouped ConvTranspose: per-channel axis 1 is not the output axis",
                )
            )
            continue
        if const_w:
            assert weight is not None
            axis = weight_axis(node, index, weight)
            if axis is None:
                plan.unquantized.append((label(node), node.op_type, "weight layout not understood"))
                continue
            site = WeightedSite(label(node), node.op_type, name, (str(node.input[0]),), weight, axis)
        elif node.op_type in ("MatMul", "Gemm") and weight is not None:
            site = WeightedSite(label(node), node.op_type, name, (str(node.input[0]), weight), None, None)
        else:
            plan.unquantized.append((label(node), node.op_type, "weight is not a constant"))
            continue
        plan.weighted.append(site)
        quantized_nodes.add(id(node))

    wanted: set[str] = {t for s in plan.weighted for t in s.data_inputs}
    depth = _depths(index)
    for node in model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        a, b = str(node.input[0]), str(node.input[1])
        if index.is_constant(a) or index.is_constant(b):
            continue
        fused = [
            id(_origin(index, t)) in quantized_nodes if _origin(index, t) is not None else False
            for t in (a, b)
        ]
        if fused[0] and fused[1]:
            skip = 0 if depth.get(a, 0) < depth.get(b, 0) else 1
            why = "both inputs come from weighted ops: the shallower one is the skip"
        elif fused[0] or fused[1]:
            skip = 1 if fused[0] else 0
            why = "skip input quantized; the weighted-op branch stays float for fusion"
        else:
            plan.residuals.append(
                ResidualSite(label(node), (a, b), None, "no input comes from a quantized weighted op")
            )
            continue
        plan.residuals.append(ResidualSite(label(node), (a, b), skip, why))
        wanted.add((a, b)[skip])

    order = {name: k for k, name in enumerate(index.graph_inputs)}
    for k, node in enumerate(model.graph.node):
        for out in node.output:
            order.setdefault(out, len(index.graph_inputs) + k)
    plan.activations = sorted(wanted, key=lambda t: order.get(t, -1))
    for t in plan.activations:
        src = _passthrough_source(index, t)
        while src is not None and src not in wanted:
            src = _passthrough_source(index, src)
        if src is not None:
            plan.inherit[t] = src
    for t, src in list(plan.inherit.items()):  # resolve chains to a calibrated tensor
        while src in plan.inherit:
            src = plan.inherit[src]
        plan.inherit[t] = src

    weighted_labels = {s.node for s in plan.weighted} | {u[0] for u in plan.unquantized}
    fused_adds = {r.node for r in plan.residuals if r.skip_index is not None}
    const_derived = set(index.initializers)
    for node in model.graph.node:
        lab = label(node)
        if node.op_type in SHAPE_OPS or all(i in const_derived for i in node.input if i):
            const_derived.update(o for o in node.output if o)
            continue
        if lab in weighted_labels:
            continue
        if lab in fused_adds:
            why = "residual Add: fused into the preceding weighted op"
        elif node.op_type in ("Relu", "Clip", "BatchNormalization", "LeakyRelu", "Sigmoid"):
            why = "activation/BN: fused into the preceding op where possible, else float"
        else:
            why = "runs in the graph's float precision"
        plan.unquantized.append((lab, node.op_type, why))
    return plan
