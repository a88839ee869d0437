"""``requant inspect``: the TensorRT rules check on ONNX files written here or by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install 'requant-plugin[onnx]'")


def _qdq_conv_model(zero_point_dtype: int, zero_point: int) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(DQ(int8 weight)) -> y, with the activation zero point as given."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(-8, 10, dtype=np.int8).reshape(2, 1, 3, 3)
    np_zp = {TensorProto.UINT8: np.uint8, TensorProto.INT8: np.int8}[zero_point_dtype]
    inits = [
        numpy_helper.from_array(np.array(0.05, dtype=np.float32), "x_scale"),
        numpy_helper.from_array(np.array(zero_point, dtype=np_zp), "x_zp"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(np.array([0.01, 0.02], dtype=np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(2, dtype=np.int8), "w_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="q_x"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], name="dq_w", axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_inspect_clean_handmade_model(cli, tmp_path: Path) -> None:
    path = tmp_path / "ok.onnx"
    onnx.save(_qdq_conv_model(onnx.TensorProto.INT8, 0), str(path))
    status, out, err = cli("inspect", str(path))
    assert status == 0, out + err
    assert "1 QuantizeLinear, 2 DequantizeLinear, 1 Conv/Gemm/MatMul" in out
    assert "opset 17" in out and "OK, no error" in out


def test_inspect_flags_uint8_nonzero_zero_point(cli, tmp_path: Path) -> None:
    path = tmp_path / "asym.onnx"
    onnx.save(_qdq_conv_model(onnx.TensorProto.UINT8, 128), str(path))
    status, out, _ = cli("inspect", str(path))
    assert status == 1
    assert "error" in out and "zero" in out.lower()


def test_inspect_not_an_onnx_file(cli, tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00\x01 definitely not protobuf")
    status, _, err = cli("inspect", str(path))
    assert status == 2
    assert "not a readable ONNX file" in err and "Traceback" not in err


def test_inspect_export_written_by_the_package(cli, tmp_path: Path) -> None:
    export = pytest.importorskip("requant_plugin.export")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)).eval()
    path = tmp_path / "tiny.onnx"
    export.export_onnx_qdq(net, [torch.randn(8, 1, 6, 6) for _ in range(2)], path)
    status, out, err = cli("inspect", str(path))
    assert status == 0, out + err
    assert "2 Conv/Gemm/MatMul" in out and "OK, no error" in out
