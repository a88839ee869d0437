"""check_tensorrt_compat: clean exports pass; each broken rule on a hand-built graph is reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from requant_plugin.export import check_tensorrt_compat, export_onnx_qdq


def _block(
    *,
    act_zp: np.ndarray | None = None,
    act_scale: np.ndarray | None = None,
    act_axis: int | None = None,
    clip_between: bool = False,
    drop_w2_dq: bool = False,
    quantize_conv_branch: bool = False,
    w_axis: int = 0,
    opset: int = 17,
    zp_missing: bool = False,
    skip_float: bool = False,
) -> onnx.ModelProto:
    """x -> QDQ -> Conv(DQ w1) -> Relu = r -> QDQ -> Conv(DQ w2) = c; Add(c, DQ(r)) -> Relu."""
    rng = np.random.default_rng(0)
    zp = np.zeros((), np.int8) if act_zp is None else act_zp
    s = np.asarray(0.05, np.float32) if act_scale is None else act_scale
    inits = [numpy_helper.from_array(zp, "zp"), numpy_helper.from_array(s, "s")]
    for k in (1, 2):
        inits += [
            numpy_helper.from_array(rng.integers(-127, 128, (4, 4, 3, 3)).astype(np.int8), f"w{k}_q"),
            numpy_helper.from_array(np.full(4, 0.01, np.float32), f"w{k}_s"),
            numpy_helper.from_array(np.zeros(4, np.int8), f"w{k}_zp"),
        ]
    inits.append(numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2_f"))
    axis: dict[str, Any] = {} if act_axis is None else {"axis": act_axis}
    qin = ["x", "s"] if zp_missing else ["x", "s", "zp"]
    nodes = [
        helper.make_node("QuantizeLinear", qin, ["xq"], name="q_x", **axis),
        helper.make_node("Clip", ["xq"], ["xc"], name="clip") if clip_between else None,
        helper.make_node(
            "DequantizeLinear", ["xc" if clip_between else "xq", "s", "zp"], ["xd"], name="dq_x", **axis
        ),
        helper.make_node("DequantizeLinear", ["w1_q", "w1_s", "w1_zp"], ["w1"], name="dq_w1", axis=w_axis),
        helper.make_node("Conv", ["xd", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r"], name="relu1"),
        helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["rq"], name="q_r"),
        helper.make_node("DequantizeLinear", ["rq", "s", "zp"], ["rd"], name="dq_r"),
        None
        if drop_w2_dq
        else helper.make_node("DequantizeLinear", ["w2_q", "w2_s", "w2_zp"], ["w2"], name="dq_w2", axis=0),
        helper.make_node(
            "Conv", ["rd", "w2_f" if drop_w2_dq else "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]
        ),
    ]
    branch = "c2"
    if quantize_conv_branch:
        nodes += [
            helper.make_node("QuantizeLinear", ["c2", "s", "zp"], ["c2q"], name="q_c2"),
            helper.make_node("DequantizeLinear", ["c2q", "s", "zp"], ["c2d"], name="dq_c2"),
        ]
        branch = "c2d"
    nodes += [
        helper.make_node("Add", [branch, "r" if skip_float else "rd"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["y"], name="relu2"),
    ]
    graph = helper.make_graph(
        [n for n in nodes if n is not None],
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _rules(model: onnx.ModelProto) -> set[str]:
    return {v.rule for v in check_tensorrt_compat(model) if v.severity == "error"}


def test_clean_block_is_valid_and_passes() -> None:
    model = _block()
    onnx.checker.check_model(model, full_check=True)
    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.ones((1, 4, 8, 8), np.float32)}
    )[0]
    assert out.shape == (1, 4, 8, 8)
    assert check_tensorrt_compat(model) == []


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"act_zp": np.zeros((), np.uint8)}, "zero_point_dtype"),
        ({"act_zp": np.asarray(3, np.int8)}, "zero_point_value"),
        ({"act_scale": np.asarray(-0.05, np.float32)}, "scale"),
        ({"act_scale": np.asarray(np.nan, np.float32)}, "scale"),
        ({"clip_between": True}, "dq_input"),
        ({"clip_between": True}, "q_output"),
        (
            {"act_scale": np.full(4, 0.05, np.float32), "act_zp": np.zeros(4, np.int8), "act_axis": 1},
            "per_channel_activation",
        ),
        ({"drop_w2_dq": True}, "missing_weight_dq"),
        ({"quantize_conv_branch": True}, "residual_add"),
        ({"opset": 12}, "opset"),
        ({"w_axis": 1}, "per_channel_axis"),
        ({"zp_missing": True}, "zero_point_missing"),
    ],
)
def test_each_broken_rule_is_reported(kwargs: dict[str, Any], rule: str) -> None:
    assert rule in _rules(_block(**kwargs))


def test_float_skip_is_a_warning_only() -> None:
    found = check_tensorrt_compat(_block(skip_float=True))
    assert [(v.rule, v.severity) for v in found] == [("residual_skip_float", "warning")]


def test_check_accepts_a_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    onnx.save(_block(act_zp=np.asarray(1, np.int8)), str(path))
    found = check_tensorrt_compat(path)
    assert [v.rule for v in found] == ["zero_point_value"] * 4  # the shared zero point, on 4 Q/DQ
    assert {v.node for v in found} == {"q_x", "dq_x", "q_r", "dq_r"}


def test_resnet56_export_has_no_violation(setup: Any, tmp_path: Path) -> None:
    report = export_onnx_qdq(setup.model("resnet56"), setup.calib[:1], tmp_path / "r56.onnx")
    assert report.violations == []
    assert check_tensorrt_compat(report.path) == []
    assert len(report.weights) == 56


def test_resnet20_export_has_no_violation(r20: Any) -> None:
    assert check_tensorrt_compat(r20[0].path) == []
