"""export_onnx_qdq on ResNet-20: structure, ONNX checker, ORT vs fake-quant, polygraphy lint."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from requant_plugin.export import check_tensorrt_compat, polygraphy_lint
from requant_plugin.export.reference import fake_quant_reference
from requant_plugin.export.verify import compare_with_reference, ort_predict


def _graph(path: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    prod = {o: n for n in m.graph.node for o in n.output}
    return m, inits, prod


def test_onnx_checker_full_check(r20: Any) -> None:
    report, _, _ = r20
    onnx.checker.check_model(str(report.path), full_check=True)
    assert report.file_size == report.path.stat().st_size


def test_qdq_placement_follows_tensorrt_fusion_rules(r20: Any) -> None:
    report, _, _ = r20
    m, inits, prod = _graph(report.path)
    convs = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(convs) == 20
    for n in convs:  # both inputs come from a DequantizeLinear
        assert prod[n.input[0]].op_type == "DequantizeLinear"
        wdq = prod[n.input[1]]
        assert wdq.op_type == "DequantizeLinear" and wdq.input[0] in inits
        q = inits[wdq.input[0]]
        assert q.dtype == np.int8
        axis = next(a.i for a in wdq.attribute if a.name == "axis")
        assert axis == 0 and inits[wdq.input[1]].shape == (q.shape[0],)
    for n in m.graph.node:  # no Q on any conv output: nothing between Conv and ReLU/Add
        if n.op_type == "QuantizeLinear":
            src = prod.get(n.input[0])
            assert src is None or src.op_type not in ("Conv", "Gemm")
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and not zp.any()
            assert inits[n.input[1]].ndim == 0 and inits[n.input[1]] > 0
    adds = [n for n in m.graph.node if n.op_type == "Add"]
    assert len(adds) == 9
    for n in adds:  # residual Add: the conv branch float, only the skip through Q/DQ
        kinds = sorted(prod[i].op_type for i in n.input)
        assert kinds == ["Conv", "DequantizeLinear"]
    q_inputs = [n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert len(q_inputs) == len(set(q_inputs)) == len(report.activations)  # one shared pair per tensor
    assert check_tensorrt_compat(report.path) == []
    assert report.violations == []
    # option-A shortcuts: the padded skip reuses the scale of the tensor it is cut from
    inherited = [a for a in report.activations if a.source.startswith("inherited")]
    assert len(inherited) == 2
    scales = report.act_scales
    for a in inherited:
        assert a.scale == scales[a.source.split("from ")[1]]


def test_input_codes_match_closed_form(r20: Any, setup: Any) -> None:
    """The first QuantizeLinear (on the image) gives clamp(round_half_even(x / s)) exactly."""
    report, _, _ = r20
    m, inits, _ = _graph(report.path)
    first = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    s = np.float32(inits[first.input[1]])
    x = setup.test_x[:32].numpy()
    from requant_plugin.export.runtime import session, with_outputs

    sess = session(with_outputs(m, [first.output[0]]), optimize=False)
    got = sess.run([first.output[0]], {"input": x})[0]
    expected = np.clip(np.rint(x / s), -128, 127).astype(np.int8)  # numpy: float32 division, half-even
    np.testing.assert_array_equal(got, expected)


def test_ort_matches_fake_quant_reference(r20: Any, setup: Any) -> None:
    """Every int8 code ORT computes equals the PyTorch fake-quant model's code, except ties that
    float32 summation order can flip; both runtimes pick the same class."""
    report, model, _ = r20
    ref = fake_quant_reference(model, report)
    res = compare_with_reference(report.path, ref, setup.test_x[:48])
    tf = res["teacher_forced"]
    assert tf["sites"] == len(report.activations) and not tf["sites_not_in_reference"]
    assert tf["codes"] > 5_000_000
    assert tf["unexplained"] == 0
    assert tf["max_code_diff"] <= 1
    assert tf["mismatch"] <= 1e-5 * tf["codes"]
    assert tf["outputs"]["max_abs"] < 1e-4
    assert res["free_running"]["argmax_agree"] >= 0.97


def test_reference_check_catches_a_wrong_scale(r20: Any, setup: Any, tmp_path: Path) -> None:
    """The comparison can fail: a 10% wrong activation scale inside the graph is caught."""
    report, model, _ = r20
    m = onnx.load(str(report.path))
    target = report.activations[5].tensor + "_scale"
    for t in m.graph.initializer:
        if t.name == target:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(1.1), t.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    ref = fake_quant_reference(model, report)
    tf = compare_with_reference(bad, ref, setup.test_x[:16])["teacher_forced"]
    assert tf["unexplained"] > 1000


def test_accuracy_close_to_fp32(r20: Any, setup: Any) -> None:
    report, _, fp32 = r20
    x, y = setup.test_x.numpy(), setup.test_y.numpy()
    q = ort_predict(report.path, x).argmax(1)
    f = ort_predict(fp32, x).argmax(1)
    assert np.mean(q == f) >= 0.95
    if setup.real:
        assert abs(np.mean(q == y) - np.mean(f == y)) <= 0.03


@pytest.mark.skipif(
    shutil.which("polygraphy") is None and importlib.util.find_spec("polygraphy") is None,
    reason="polygraphy is not installed",
)
def test_polygraphy_lint_passes(r20: Any) -> None:
    if importlib.util.find_spec("onnx_graphsurgeon") is None:
        pytest.skip("polygraphy lint needs onnx-graphsurgeon (not installed)")
    res = polygraphy_lint(r20[0].path)
    assert res["passed"], res


def test_report_lists_float_ops_and_serialises(r20: Any) -> None:
    report, _, _ = r20
    summary = report.unquantized_summary()
    assert summary.get("GlobalAveragePool") == 1 and summary.get("Relu") == 19
    text = report.table()
    assert "layer3.2.conv2" in text and "TensorRT rules: 0 errors" in text
    import json

    d = json.loads(report.to_json())
    assert d["settings"]["weight_bits"] == 8 and len(d["weights"]) == 20
