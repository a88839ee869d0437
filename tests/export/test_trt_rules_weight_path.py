"""check_tensorrt_compat follows the weight path of every weighted op: the weight input must be
DequantizeLinear(int8 initializer) or DequantizeLinear(QuantizeLinear(float initializer)), with
nothing in between (TensorRT: "could not fuse 2nd input (kernel weights) of CONVOLUTION").

Each test corrupts a clean export in one way; ONNX Runtime still runs the corrupted graph (so the
corruption is a valid ONNX model that only TensorRT rejects) and the check must name the node.
Also: files that are not ONNX models are refused with a clear ValueError.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from requant_plugin.export import check_tensorrt_compat, export_onnx_qdq


class ConvNet(nn.Module):
    """Conv -> ReLU -> Conv -> ReLU -> Flatten -> Linear (Gemm) on 6x6 RGB."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.flatten(1))


class Attention(nn.Module):
    """Tokens from a 4x4 RGB image; single-head attention: activation @ activation MatMuls and
    constant-weight MatMuls (Linear on 3-D tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(3, 8), nn.Linear(3, 8), nn.Linear(3, 8)
        self.out = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.flatten(2).transpose(1, 2)
        att = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2), dim=-1)
        return self.out((att @ self.v(t)).mean(1))


def _export(model: nn.Module, shape: tuple[int, ...], path: Path) -> onnx.ModelProto:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    export_onnx_qdq(model.eval(), [torch.randn(8, *shape, generator=gen)], path)
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def convnet(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    torch.manual_seed(0)
    return _export(ConvNet(), (3, 6, 6), tmp_path_factory.mktemp("w") / "convnet.onnx")


@pytest.fixture(scope="module")
def attention(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    torch.manual_seed(0)
    return _export(Attention(), (3, 4, 4), tmp_path_factory.mktemp("w") / "attention.onnx")


def _node(m: onnx.ModelProto, op: str, weight_prefix: str) -> Any:
    return next(n for n in m.graph.node if n.op_type == op and any(i.startswith(weight_prefix) for i in n.input))


def _producer(m: onnx.ModelProto, tensor: str) -> Any:
    return next(n for n in m.graph.node if tensor in n.output)


def _init(m: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == name))


def _insert_before(m: onnx.ModelProto, node: Any, new: Any) -> None:
    m.graph.node.insert(list(m.graph.node).index(node), new)


def _op_after_dq(op: str, slot: int = 1, **kw: Any) -> Callable[[onnx.ModelProto, Any], None]:
    """DequantizeLinear -> ``op`` -> weight input ``slot`` of the node."""

    def corrupt(m: onnx.ModelProto, node: Any) -> None:
        inputs = [node.input[slot]]
        if op == "Reshape":
            shape = _init(m, _producer(m, node.input[slot]).input[0]).shape
            m.graph.initializer.append(numpy_helper.from_array(np.asarray(shape, np.int64), "bad_shape"))
            inputs.append("bad_shape")
        _insert_before(m, node, helper.make_node(op, inputs, ["moved_w"], name=f"bad_{op}", **kw))
        node.input[slot] = "moved_w"

    return corrupt


def _identity_before_dq(m: onnx.ModelProto, node: Any) -> None:
    """int8 initializer -> Identity -> DequantizeLinear."""
    dq = _producer(m, node.input[1])
    _insert_before(m, dq, helper.make_node("Identity", [dq.input[0]], ["w_id"], name="bad_identity"))
    dq.input[0] = "w_id"


def _identity_between_q_and_dq(m: onnx.ModelProto, node: Any) -> None:
    """float initializer -> QuantizeLinear -> Identity -> DequantizeLinear."""
    dq = _producer(m, node.input[1])
    q, s = _init(m, dq.input[0]), _init(m, dq.input[1])
    m.graph.initializer.append(numpy_helper.from_array(q.astype(np.float32) * s.reshape(-1, 1, 1, 1), "w_f"))
    _insert_before(m, dq, helper.make_node("QuantizeLinear", ["w_f", dq.input[1], dq.input[2]], ["w_q"],
                                           name="w_quantize", axis=0))
    _insert_before(m, dq, helper.make_node("Identity", ["w_q"], ["w_q_id"], name="bad_identity"))
    dq.input[0] = "w_q_id"


def _weight_from_input(m: onnx.ModelProto, node: Any) -> None:
    """A weight computed from the graph input: QuantizeLinear(per-tensor) of an activation."""
    dq = _producer(m, node.input[1])
    shape = list(_init(m, dq.input[0]).shape)
    m.graph.initializer.append(numpy_helper.from_array(np.asarray(shape, np.int64), "w_shape"))
    m.graph.initializer.append(numpy_helper.from_array(np.asarray(0.02, np.float32), "w_s"))
    n_w = int(np.prod(shape))
    m.graph.initializer.append(numpy_helper.from_array(np.asarray([0], np.int64), "w_start"))
    m.graph.initializer.append(numpy_helper.from_array(np.asarray([n_w], np.int64), "w_end"))
    nodes = [
        helper.make_node("Flatten", ["input"], ["x_flat"], name="x_flat", axis=0),
        helper.make_node("Slice", ["x_flat", "w_start", "w_end", "w_start_axis"], ["x_part"], name="x_part"),
        helper.make_node("Reshape", ["x_part", "w_shape"], ["x_w"], name="x_w"),
        helper.make_node("QuantizeLinear", ["x_w", "w_s", "qdq_int8_zero_point"], ["x_wq"], name="w_from_x"),
        helper.make_node("DequantizeLinear", ["x_wq", "w_s", "qdq_int8_zero_point"], ["x_wd"], name="w_from_x_dq"),
    ]
    m.graph.initializer.append(numpy_helper.from_array(np.asarray([1], np.int64), "w_start_axis"))
    for n in nodes:
        _insert_before(m, node, n)
    node.input[1] = "x_wd"


def _int8_from_cast(m: onnx.ModelProto, node: Any) -> None:
    """DequantizeLinear of a Cast (constant-derived, but not an initializer)."""
    dq = _producer(m, node.input[1])
    m.graph.initializer.append(numpy_helper.from_array(_init(m, dq.input[0]).astype(np.float32), "w_codes_f"))
    _insert_before(m, dq, helper.make_node("Cast", ["w_codes_f"], ["w_codes"], name="bad_cast", to=TensorProto.INT8))
    dq.input[0] = "w_codes"


CORRUPTIONS: dict[str, Callable[[onnx.ModelProto, Any], None]] = {
    "identity_between_q_and_dq": _identity_between_q_and_dq,
    "identity_before_dq": _identity_before_dq,
    "cast_after_dq": _op_after_dq("Cast", to=TensorProto.FLOAT),
    "reshape_after_dq": _op_after_dq("Reshape"),
    "transpose_after_dq": _op_after_dq("Transpose", perm=[0, 1, 3, 2]),
    "weight_from_graph_input": _weight_from_input,
    "int8_codes_from_cast": _int8_from_cast,
}


def _weight_path_errors(m: onnx.ModelProto) -> list[str]:
    return [v.node for v in check_tensorrt_compat(m) if v.rule == "weight_path" and v.severity == "error"]


def _runs_in_ort(m: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": np.ones((2, *shape), np.float32)})[0]
    assert np.isfinite(out).all()


def test_clean_exports_have_no_weight_path_error(convnet: onnx.ModelProto, attention: onnx.ModelProto) -> None:
    assert check_tensorrt_compat(convnet) == []
    # the activation @ activation MatMuls have no weight input: nothing to flag
    inits = {t.name for t in attention.graph.initializer}
    weights = {n.output[0] for n in attention.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    matmuls = [n for n in attention.graph.node if n.op_type == "MatMul"]
    assert sum(not (set(n.input) & weights) for n in matmuls) == 2  # q @ k^T and att @ v
    assert sum(bool(set(n.input) & weights) for n in matmuls) == 3  # the q, k, v projections
    assert [v for v in check_tensorrt_compat(attention) if v.severity == "error"] == []


def _corrupted(convnet: onnx.ModelProto, op: str, weight_prefix: str, corruption: str) -> tuple[onnx.ModelProto, Any]:
    """A copy of ``convnet`` with ``CORRUPTIONS[corruption]`` applied to the ``op`` node reading
    ``weight_prefix``'s weight (still a valid model ONNX Runtime runs), and that node."""
    m = onnx.ModelProto()
    m.CopyFrom(convnet)
    node = _node(m, op, weight_prefix)
    CORRUPTIONS[corruption](m, node)
    _runs_in_ort(m, (3, 6, 6))
    return m, node


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_each_conv_weight_corruption_is_an_error(convnet: onnx.ModelProto, corruption: str) -> None:
    m, conv = _corrupted(convnet, "Conv", "conv2.", corruption)
    assert _weight_path_errors(m) == [conv.name]
    message = next(str(v) for v in check_tensorrt_compat(m) if v.rule == "weight_path")
    assert conv.name in message and "initializer" in message


@pytest.mark.parametrize("corruption", ["identity_before_dq", "cast_after_dq"])
def test_gemm_weight_b_corruption_is_an_error(convnet: onnx.ModelProto, corruption: str) -> None:
    m, gemm = _corrupted(convnet, "Gemm", "fc.", corruption)
    assert _weight_path_errors(m) == [gemm.name]


def test_matmul_constant_weight_after_cast_is_an_error(attention: onnx.ModelProto) -> None:
    m = onnx.ModelProto()
    m.CopyFrom(attention)
    inits = {t.name for t in m.graph.initializer}
    matmul = next(
        n for n in m.graph.node
        if n.op_type == "MatMul" and _producer(m, n.input[1]).op_type == "DequantizeLinear"
        and _producer(m, n.input[1]).input[0] in inits
    )
    _op_after_dq("Cast", to=TensorProto.FLOAT)(m, matmul)
    _runs_in_ort(m, (3, 4, 4))
    assert _weight_path_errors(m) == [matmul.name]


def test_empty_file_is_not_an_onnx_model(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.onnx is not an ONNX model \(an empty file\)"):
        check_tensorrt_compat(path)


def test_garbage_file_is_not_an_onnx_model(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text('{"this": "is json, not onnx"}\n')
    with pytest.raises(ValueError, match=r"notes\.onnx is not an ONNX model"):
        check_tensorrt_compat(path)
