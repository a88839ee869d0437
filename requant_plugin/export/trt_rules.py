"""Static check of the rules TensorRT imposes on an explicitly quantized (Q/DQ) ONNX graph.

A real TensorRT parse needs a CUDA GPU; this lint stands in for it on CPU machines. Rules:

* ``opset``: default opset >= 13 (per-channel Q/DQ ``axis``); float16 scales need >= 19;
* ``zero_point_missing`` / ``zero_point_dtype`` / ``zero_point_value`` / ``zero_point_constant``:
  every Q/DQ zero point is a constant int8 tensor of zeros (TensorRT is symmetric only; a
  QuantizeLinear without zero point produces uint8);
* ``scale``: constant, finite and strictly positive;
* ``per_channel_activation``: a per-channel scale only on a Q/DQ rooted at a constant weight;
* ``per_channel_axis``: the axis of a per-channel weight DQ is the output axis of its consumer
  (Conv 0, ConvTranspose 1, Gemm 0 if transB else 1, MatMul last) and the scale length matches;
* ``dq_input`` / ``q_output``: every DequantizeLinear reads a QuantizeLinear or a constant, and a
  QuantizeLinear feeds only DequantizeLinear (nothing, e.g. a Clip, in between);
* ``weight_path``: the weight input of a weighted op (Conv/ConvTranspose input 1; Gemm input B
  and MatMul's constant-derived input when one is) is a DequantizeLinear output read straight
  from an int8 initializer or from a QuantizeLinear of a float initializer; any op in between
  (Identity, Cast, Reshape, Transpose, ...) or a weight computed from activations makes TensorRT
  fail to fuse the kernel weights. MatMuls/Gemms of two activations have no weight input;
* ``missing_data_dq`` / ``missing_weight_dq``: a weighted op (Conv, ConvTranspose, Gemm, MatMul)
  with DQ on one of data/weight but not the other (``float_layer`` warning when neither);
* ``residual_add``: an ``Add`` input that is a quantized weighted-op output while the other input
  is not an unquantized weighted-op output (TensorRT then cannot fuse the Add into the conv);
  ``residual_skip_float`` (warning): the skip input of a fusable residual Add is not quantized.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..deps import require
from .graph import WEIGHTED_OPS, GraphIndex, attr, label
from .report import Violation

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _load(model: Any) -> Any:
    """The ModelProto of ``model`` (a path is read; a file that is not ONNX raises ValueError)."""
    if not isinstance(model, (str, os.PathLike)):
        return model
    onnx = require("onnx", "requant_plugin.export")
    path = os.fspath(model)
    try:
        proto = onnx.load(path)
    except OSError:  # missing file, no permission: not about the contents
        raise
    except Exception as exc:  # protobuf DecodeError and friends: the bytes are not a ModelProto
        raise ValueError(f"{path} is not an ONNX model ({type(exc).__name__}: {exc}); pass an .onnx file") from exc
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        what = "an empty file" if os.path.getsize(path) == 0 else "no ONNX graph in it"
        raise ValueError(f"{path} is not an ONNX model ({what}); pass an .onnx file")
    return proto


def _expected_axis(consumer: Any, slot: int, ndim: int) -> int | None:
    if slot != 1:
        return None
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "ConvTranspose":
        return 1
    if consumer.op_type == "Gemm":
        return 0 if int(attr(consumer, "transB", 0)) else 1
    if consumer.op_type == "MatMul":
        return ndim - 1
    return None


def _rooted_at_constant(index: GraphIndex, node: Any) -> bool:
    src = node.input[0]
    if index.is_constant(src):
        return True
    prod = index.producer.get(src)
    return (
        node.op_type == "DequantizeLinear"
        and prod is not None
        and prod.op_type == "QuantizeLinear"
        and index.is_constant(prod.input[0])
    )


def _check_qdq(index: GraphIndex, node: Any, out: list[Violation]) -> None:
    onnx = require("onnx", "requant_plugin.export")
    name = label(node)
    if len(node.input) < 2 or not index.is_constant(node.input[1]):
        out.append(Violation("scale", name, "the scale must be a constant (initializer or Constant)"))
        scale = None
    else:
        scale = index.const_value(node.input[1])
        assert scale is not None
        if not np.all(np.isfinite(scale.astype(np.float64))) or np.any(scale <= 0):
            bad = scale.reshape(-1)[~(np.isfinite(scale.reshape(-1)) & (scale.reshape(-1) > 0))]
            out.append(Violation("scale", name, f"scales must be finite and > 0, found {bad[:4].tolist()}"))
        sdt = index.const_dtype(node.input[1])
        if sdt in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16) and index.opset() < 19:
            out.append(Violation("opset", name, "float16/bfloat16 scales need opset >= 19"))
    if len(node.input) < 3 or not node.input[2]:
        if node.op_type == "QuantizeLinear":
            out.append(
                Violation(
                    "zero_point_missing",
                    name,
                    "QuantizeLinear without a zero point outputs uint8; give an int8 zero point of 0",
                )
            )
    elif not index.is_constant(node.input[2]):
        out.append(Violation("zero_point_constant", name, "the zero point must be a constant"))
    else:
        zdt = index.const_dtype(node.input[2])
        if zdt != onnx.TensorProto.INT8:
            dname = onnx.TensorProto.DataType.Name(zdt) if zdt is not None else "unknown"
            out.append(
                Violation(
                    "zero_point_dtype", name, f"zero point is {dname}; TensorRT INT8 needs an int8 zero point"
                )
            )
        zp = index.const_value(node.input[2])
        if zp is not None and np.any(zp != 0):
            out.append(
                Violation(
                    "zero_point_value",
                    name,
                    f"zero point {zp.reshape(-1)[:4].tolist()} is not 0: TensorRT is symmetric only",
                )
            )
    if scale is not None and scale.ndim == 1 and scale.size > 1:
        _check_per_channel(index, node, scale, out)


def _check_per_channel(index: GraphIndex, node: Any, scale: np.ndarray, out: list[Violation]) -> None:
    name = label(node)
    if not _rooted_at_constant(index, node):
        out.append(
            Violation(
                "per_channel_activation",
                name,
                "per-channel scale on a non-constant tensor: activations must be per tensor",
            )
        )
        return
    if node.op_type != "DequantizeLinear":
        return
    src = node.input[0]
    value = index.const_value(src)
    if value is None:
        prod = index.producer[src]
        value = index.const_value(prod.input[0])
    assert value is not None
    axis = int(attr(node, "axis", 1))
    axis = axis % max(value.ndim, 1)
    if value.shape[axis] != scale.size:
        out.append(
            Violation(
                "per_channel_axis", name, f"{scale.size} scales for axis {axis} of size {value.shape[axis]}"
            )
        )
    for consumer, slot in index.users(node.output[0]):
        want = _expected_axis(consumer, slot, value.ndim)
        if want is not None and want != axis:
            out.append(
                Violation(
                    "per_channel_axis",
                    name,
                    f"axis={axis} but {consumer.op_type} {label(consumer)} needs the output axis {want}",
                )
            )


def _origin(index: GraphIndex, tensor: str) -> tuple[bool, Any]:
    """(is the tensor a DQ output, the op the values come from seen through Q/DQ and BN)."""
    node = index.producer.get(tensor)
    dq = node is not None and node.op_type == "DequantizeLinear"
    if dq and node is not None:
        q = index.producer.get(node.input[0])
        node = index.producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else q
    while node is not None and node.op_type == "BatchNormalization":
        node = index.producer.get(node.input[0])
    return dq, node


def _check_add(index: GraphIndex, node: Any, out: list[Violation]) -> None:
    if len(node.input) != 2 or any(index.is_constant(t) for t in node.input):
        return
    info = [_origin(index, t) for t in node.input]
    weighted = [o is not None and o.op_type in WEIGHTED_OPS for _, o in info]
    fusable = [weighted[i] and not info[i][0] for i in range(2)]
    for i in range(2):
        if info[i][0] and weighted[i] and not fusable[1 - i]:
            out.append(
                Violation(
                    "residual_add",
                    label(node),
                    f"input {i} is the quantized output of {label(info[i][1])}: leave the branch that "
                    "comes straight from a weighted op float (TensorRT fuses the Add into it) and "
                    "quantize the skip input",
                )
            )
    for i in range(2):
        if fusable[i] and not info[1 - i][0] and not fusable[1 - i]:
            out.append(
                Violation(
                    "residual_skip_float",
                    label(node),
                    f"skip input {1 - i} is not quantized: the fused Add runs in float",
                    severity="warning",
                )
            )


def _check_weighted(index: GraphIndex, node: Any, out: list[Violation]) -> None:
    def is_dq(t: str) -> bool:
        p = index.producer.get(t)
        return p is not None and p.op_type == "DequantizeLinear"

    if len(node.input) < 2:
        return
    data, weight = is_dq(node.input[0]), is_dq(node.input[1])
    if data and weight:
        return
    if not data and not weight:
        out.append(
            Violation(
                "float_layer",
                label(node),
                f"{node.op_type} has no Q/DQ: it runs in float",
                severity="warning",
            )
        )
    elif not weight:
        out.append(
            Violation(
                "missing_weight_dq",
                label(node),
                f"{node.op_type} has a DQ on its data input but none on its weight",
            )
        )
    else:
        out.append(
            Violation(
                "missing_data_dq",
                label(node),
                f"{node.op_type} has a DQ on its weight but none on its data input",
            )
        )


def _constant_derived(model: Any, index: GraphIndex) -> set[str]:
    """Tensors computed from initializers and Constant nodes only (no graph input upstream)."""
    const = set(index.initializers)
    for node in model.graph.node:
        if all(i in const for i in node.input if i):
            const.update(o for o in node.output if o)
    return const


def _weight_slot(node: Any, const: set[str]) -> int | None:
    """Input index of the weight of a weighted op, or None (a MatMul/Gemm of two activations)."""
    if len(node.input) < 2:
        return None
    if node.op_type in ("Conv", "ConvTranspose"):
        return 1
    if node.input[1] in const:
        return 1
    if node.op_type == "MatMul" and node.input[0] in const:
        return 0
    return None


def _is_direct_constant(index: GraphIndex, name: str) -> bool:
    """An initializer or a Constant node output, with no op in between."""
    prod = index.producer.get(name)
    return name in index.initializers or (prod is not None and prod.op_type == "Constant")


def _check_weight_path(index: GraphIndex, node: Any, const: set[str], out: list[Violation]) -> None:
    onnx = require("onnx", "requant_plugin.export")
    slot = _weight_slot(node, const)
    if slot is None:
        return
    fix = (
        "TensorRT cannot fuse such kernel weights; feed the weight input straight from "
        "DequantizeLinear(int8 initializer) or DequantizeLinear(QuantizeLinear(float initializer))"
    )
    tensor = node.input[slot]
    prod = index.producer.get(tensor)
    if prod is None or prod.op_type != "DequantizeLinear":
        seen = prod
        for _ in range(32):  # an op between the weight's DequantizeLinear and this input?
            if seen is None or seen.op_type == "DequantizeLinear" or not seen.input:
                break
            seen = index.producer.get(seen.input[0])
        if seen is not None and seen.op_type == "DequantizeLinear" and prod is not None:
            out.append(
                Violation(
                    "weight_path",
                    label(node),
                    f"the weight (input {slot}) of {node.op_type} {label(node)} reaches it through "
                    f"{prod.op_type} {label(prod)} after DequantizeLinear {label(seen)}: {fix}",
                )
            )
        return
    src = prod.input[0]
    src_prod = index.producer.get(src)
    if _is_direct_constant(index, src):
        dtype = index.const_dtype(src)
        if dtype != onnx.TensorProto.INT8:
            dname = onnx.TensorProto.DataType.Name(dtype) if dtype is not None else "unknown"
            out.append(
                Violation(
                    "weight_path",
                    label(node),
                    f"DequantizeLinear {label(prod)} of the weight of {node.op_type} {label(node)} reads a "
                    f"{dname} constant {src!r}; store the weight as an int8 initializer",
                )
            )
        return
    if src_prod is not None and src_prod.op_type == "QuantizeLinear":
        if _is_direct_constant(index, src_prod.input[0]):
            return
        up = index.producer.get(src_prod.input[0])
        what = f"{up.op_type} {label(up)}" if up is not None else f"graph input {src_prod.input[0]!r}"
        out.append(
            Violation(
                "weight_path",
                label(node),
                f"the weight of {node.op_type} {label(node)} is QuantizeLinear {label(src_prod)} of {what}, "
                f"not of a constant initializer: {fix}",
            )
        )
        return
    what = f"{src_prod.op_type} {label(src_prod)}" if src_prod is not None else f"graph input {src!r}"
    out.append(
        Violation(
            "weight_path",
            label(node),
            f"DequantizeLinear {label(prod)} of the weight of {node.op_type} {label(node)} reads {what}, "
            f"not an int8 initializer or a QuantizeLinear of one: {fix}",
        )
    )


def check_tensorrt_compat(model: Any) -> list[Violation]:
    """Check an ONNX file (path) or ``ModelProto`` against TensorRT's explicit-quantization rules.

    Returns every :class:`Violation` found (empty list: nothing found); see the module
    docstring for the rules. Errors make TensorRT reject the graph or miss the intended INT8
    fusion; warnings mark layers left in float. Raises ValueError when a path is not an ONNX
    model (an empty file, or bytes that do not parse as one).
    """
    m = _load(model)
    index = GraphIndex(m)
    out: list[Violation] = []
    const = _constant_derived(m, index)
    opset = index.opset()
    if opset < 13:
        out.append(
            Violation(
                "opset",
                "<model>",
                f"opset {opset} < 13: per-channel Q/DQ needs opset >= 13 (use 17-20 for TensorRT)",
            )
        )
    for node in m.graph.node:
        if node.op_type in _QDQ:
            _check_qdq(index, node, out)
        if node.op_type == "DequantizeLinear" and not index.is_constant(node.input[0]):
            prod = index.producer.get(node.input[0])
            if prod is None or prod.op_type != "QuantizeLinear":
                what = prod.op_type if prod is not None else "a graph input"
                out.append(
                    Violation(
                        "dq_input",
                        label(node),
                        f"DequantizeLinear reads {what}, not a QuantizeLinear or a constant",
                    )
                )
        if node.op_type == "QuantizeLinear":
            for consumer, _ in index.users(node.output[0]):
                if consumer.op_type != "DequantizeLinear":
                    out.append(
                        Violation(
                            "q_output",
                            label(node),
                            f"QuantizeLinear feeds {consumer.op_type} {label(consumer)}, "
                            "not a DequantizeLinear",
                        )
                    )
        if node.op_type in WEIGHTED_OPS:
            _check_weighted(index, node, out)
            _check_weight_path(index, node, const, out)
        if node.op_type == "Add":
            _check_add(index, node, out)
    return out
