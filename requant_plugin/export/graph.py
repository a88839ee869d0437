"""Read-only index over an ONNX graph: producers, consumers, constants and the opset.

Shared by the Q/DQ placement (:mod:`.placement`) and the TensorRT rules check
(:mod:`.trt_rules`). Works on ``onnx.ModelProto`` objects and never modifies them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from ..deps import require

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Ops that only move, select or pad values (with zeros): a quantized tensor stays on its grid.
PASSTHROUGH_OPS = (
    "Identity",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Pad",
    "MaxPool",
    "Gather",
)


class GraphIndex:
    """Producers, consumers and constant values of the tensors of ``model.graph``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        graph = model.graph
        self.initializers: dict[str, Any] = {t.name: t for t in graph.initializer}
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[tuple[Any, int]]] = defaultdict(list)
        for node in graph.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for i, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((node, i))
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.graph_outputs = [o.name for o in graph.output]
        self.order = {id(node): k for k, node in enumerate(graph.node)}

    def opset(self) -> int:
        """Version of the default (``ai.onnx``) operator set."""
        for imp in self.model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                return int(imp.version)
        return 0

    def is_constant(self, name: str) -> bool:
        """True for initializers, ``Constant`` outputs and ``Identity`` of a constant."""
        if name in self.initializers:
            return True
        node = self.producer.get(name)
        if node is None:
            return False
        if node.op_type == "Constant":
            return True
        return node.op_type == "Identity" and self.is_constant(node.input[0])

    def const_value(self, name: str) -> np.ndarray | None:
        """NumPy value of a constant tensor, or None when ``name`` is not a constant."""
        numpy_helper = require("onnx", "requant_plugin.export").numpy_helper
        if name in self.initializers:
            return np.asarray(numpy_helper.to_array(self.initializers[name]))
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Identity":
            return self.const_value(node.input[0])
        if node.op_type != "Constant":
            return None
        for attr in node.attribute:
            if attr.name == "value":
                return np.asarray(numpy_helper.to_array(attr.t))
            if attr.name == "value_float":
                return np.asarray(attr.f, dtype=np.float32)
            if attr.name == "value_floats":
                return np.asarray(list(attr.floats), dtype=np.float32)
            if attr.name == "value_int":
                return np.asarray(attr.i, dtype=np.int64)
            if attr.name == "value_ints":
                return np.asarray(list(attr.ints), dtype=np.int64)
        return None

    def const_dtype(self, name: str) -> int | None:
        """ONNX ``TensorProto`` data type of a constant tensor (None if not a constant)."""
        if name in self.initializers:
            return int(self.initializers[name].data_type)
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Identity":
            return self.const_dtype(node.input[0])
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return int(attr.t.data_type)
            return 1
        return None

    def users(self, name: str) -> list[tuple[Any, int]]:
        """``(node, input index)`` of every consumer of ``name``."""
        return list(self.consumers.get(name, []))


def label(node: Any) -> str:
    """A readable name for a node: its name, else ``OpType(first output)``."""
    return str(node.name) if node.name else f"{node.op_type}({node.output[0] if node.output else ''})"


def scope_name(node: str) -> str:
    """Module qualname of a TorchScript-exported node name (``/layer1/layer1.0/conv1/Conv``)."""
    path = ""
    for part in node.split("/")[1:-1]:
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return path


def attr(node: Any, name: str, default: Any = None) -> Any:
    """Value of attribute ``name`` of ``node`` (ints, floats, strings, lists), else ``default``."""
    helper = require("onnx", "requant_plugin.export").helper
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def weight_axis(node: Any, index: GraphIndex, weight_name: str) -> int | None:
    """Output-channel axis of the constant weight input of a weighted op.

    Conv: 0 (KCRS); ConvTranspose: 1 (CKRS); Gemm: 0 when ``transB=1`` else 1; MatMul: the
    last axis of B. None when the node has no constant weight in the expected slot.
    """
    value = index.const_value(weight_name)
    if value is None:
        return None
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        return 0 if int(attr(node, "transB", 0)) else 1
    if node.op_type == "MatMul":
        return value.ndim - 1 if value.ndim >= 2 else None
    return None

