"""Run the float (unquantized) part of a Q/DQ graph in float16.

TensorRT 11 builds strongly typed networks only: a layer without Q/DQ runs in the precision
the ONNX declares. This converts every float32 tensor of the graph to float16 (initializers,
``Constant`` values, ``Cast`` targets) while keeping the model's inputs and outputs float32
through boundary ``Cast`` nodes. Q/DQ scales become float16, which needs opset >= 19.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..deps import require

#: Ops known to accept float16 throughout (ONNX and TensorRT).
FP16_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Relu",
        "LeakyRelu",
        "Clip",
        "Sigmoid",
        "Tanh",
        "HardSigmoid",
        "HardSwish",
        "Softmax",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Flatten",
        "Reshape",
        "Transpose",
        "Slice",
        "Pad",
        "Concat",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "BatchNormalization",
        "QuantizeLinear",
        "DequantizeLinear",
        "Shape",
        "Gather",
        "ConstantOfShape",
        "Cast",
        "Constant",
        "ReduceMean",
        "Split",
        "Sum",
        "Erf",
        "Sqrt",
        "Pow",
        "Neg",
        "Abs",
        "Exp",
        "Max",
        "Min",
        "Expand",
        "Range",
    }
)


def _tensor_to_fp16(t: Any, where: str) -> Any:
    numpy_helper = require("onnx", "requant_plugin.export").numpy_helper
    value = numpy_helper.to_array(t)
    limit = float(np.finfo(np.float16).max)
    if value.size and np.abs(value).max() > limit:
        raise ValueError(
            f"{where}: values up to {np.abs(value).max():.3g} overflow float16 "
            f"(max {limit}); export with fp16=False"
        )
    return numpy_helper.from_array(value.astype(np.float16), t.name)


def convert_to_fp16(model: Any) -> Any:
    """A copy of ``model`` computing in float16, with float32 inputs and outputs.

    Raises ValueError for ops outside :data:`FP16_OPS` or values that overflow float16.
    """
    onnx = require("onnx", "requant_plugin.export")
    tp, helper = onnx.TensorProto, onnx.helper
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    bad = sorted({n.op_type for n in graph.node if n.op_type not in FP16_OPS})
    if bad:
        raise ValueError(
            f"fp16=True cannot convert ops {bad}; export with fp16=False (or convert with ModelOpt AutoCast)"
        )
    for k, init in enumerate(graph.initializer):
        if init.data_type == tp.FLOAT:
            graph.initializer[k].CopyFrom(_tensor_to_fp16(init, f"initializer {init.name}"))
    for node in graph.node:
        for a in node.attribute:
            if a.name == "value" and a.type == onnx.AttributeProto.TENSOR and a.t.data_type == tp.FLOAT:
                a.t.CopyFrom(_tensor_to_fp16(a.t, f"node {node.name}"))
            if node.op_type == "Cast" and a.name == "to" and a.i == tp.FLOAT:
                a.i = tp.FLOAT16
    new_nodes: list[Any] = []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type != tp.FLOAT:
            continue
        half = f"{inp.name}_fp16"
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name == inp.name:
                    node.input[k] = half
        new_nodes.append(
            helper.make_node("Cast", [inp.name], [half], to=tp.FLOAT16, name=f"{inp.name}_to_fp16")
        )
    new_nodes.extend(graph.node)
    for o in graph.output:
        if o.type.tensor_type.elem_type != tp.FLOAT:
            continue
        half = f"{o.name}_fp16"
        for node in new_nodes:
            for k, name in enumerate(node.output):
                if name == o.name:
                    node.output[k] = half
            for k, name in enumerate(node.input):
                if name == o.name:
                    node.input[k] = half
        new_nodes.append(helper.make_node("Cast", [half], [o.name], to=tp.FLOAT, name=f"{o.name}_to_fp32"))
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    return out
