"""``requant quantize`` on digits: tables, report folder, and numbers checked against references.

References used here are independent of the package: a closed-form NumPy min-max quantizer
(torch.ao conventions) and a plain argmax accuracy loop.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from requant_plugin.data import load_digits

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def minmax_reference(w: np.ndarray, bits: int, *, symmetric: bool, per_channel: bool) -> np.ndarray:
    """Closed-form min-max fake quantization in float64 (torch.ao MinMaxObserver conventions)."""
    x = w.astype(np.float64)
    rows = x.reshape(x.shape[0], -1) if per_channel else x.reshape(1, -1)
    lo = np.minimum(rows.min(axis=1, keepdims=True), 0.0)
    hi = np.maximum(rows.max(axis=1, keepdims=True), 0.0)
    if symmetric:
        qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        s = np.maximum(-lo, hi) / ((qmax - qmin) / 2)
        z = np.zeros_like(s)
    else:
        qmin, qmax = 0, 2**bits - 1
        s = (hi - lo) / (qmax - qmin)
        z = np.clip(np.round(-lo / s), qmin, qmax)
    q = np.clip(np.rint(rows / s) + z, qmin, qmax)
    return (s * (q - z)).reshape(x.shape)


def top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * int((model(x).argmax(1) == y).sum()) / len(y)


def layer_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {n: m.weight.detach().numpy() for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 150 and img.shape[1] > 300, f"{path}: tiny image {img.shape}"
    assert float(np.ptp(img[..., :3])) > 0.2, f"{path} looks blank"


def run_saved(cli, weights: Path, out_dir: Path, *options: str) -> tuple[str, dict]:
    """``requant quantize`` on the saved digits SmallCNN with ``options``; its output and results.json."""
    status, out, err = cli("quantize", "--model", "small-cnn", "--weights", str(weights), "--data", "digits",
                           *options, "--report", str(out_dir), "--no-progress")
    assert status == 0, err
    return out, json.loads((out_dir / "results.json").read_text())


def test_fast_path_trains_small_cnn_and_writes_report(cli, tmp_path: Path) -> None:
    report = tmp_path / "report"
    status, out, err = cli("quantize", "--data", "digits", "--bits", "8", "3", "--report", str(report),
                           "--no-progress")
    assert status == 0, err
    assert "training a SmallCNN on 1,437 digits images" in out
    # the per-layer table (alpha, MSE, evaluations) and the accuracy table are printed
    assert re.search(r"layer\s+shape\s+grid\s+alpha\s+MSE min-max\s+MSE REQuant\s+MSE gain\s+evals", out)
    for layer in ("conv1", "conv2", "linear"):
        assert re.search(rf"^{layer}\s+\S+\s+(uniform|sqrt)\s+0\.\d{{4}}\s", out, re.M), layer
    assert re.search(r"^FP32\s+\d+\.\d\d", out, re.M) and re.search(r"^W3\s+\d+\.\d\d", out, re.M)
    files = sorted(p.name for p in report.iterdir())
    assert files == sorted(["report.md", "results.json", "per_layer_mse.png", "alpha_curves.png",
                            "accuracy_vs_bits.png"])
    for png in report.glob("*.png"):
        assert_png(png)
    md = (report / "report.md").read_text()
    assert "requant quantize --data digits --bits 8 3" in md
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (report / image).is_file(), image
    assert re.search(r"^\| W3 +\|", md, re.M) and re.search(r"^\| conv2 +\|", md, re.M)
    results = json.loads((report / "results.json").read_text())
    assert results["fp32"] > 90.0
    assert set(results["accuracy"]) == {"8", "3"}
    for curve in results["curves"]:
        # REQuant's alpha is never worse than min-max and sits at the dense-grid minimum
        assert curve["chosen_loss"] <= curve["minmax_loss"] * (1 + 1e-9)
        assert curve["chosen_loss"] <= curve["curve_min_loss"] * 1.02


def test_numbers_match_independent_references(cli, digits_model, tmp_path: Path) -> None:
    weights, model = digits_model
    out, res = run_saved(cli, weights, tmp_path / "r", "--bits", "8", "3")
    assert "training" not in out
    data = load_digits()
    assert res["fp32"] == pytest.approx(top1(model, data.x_test, data.y_test), abs=1e-9)
    ref_w = layer_weights(model)
    for row in res["layers"]:
        ref = minmax_reference(ref_w[row["name"]], 3, symmetric=False, per_channel=False)
        ref_mse = float(np.mean((ref_w[row["name"]].astype(np.float64) - ref) ** 2))
        assert row["mse_minmax"] == pytest.approx(ref_mse, rel=1e-3), row["name"]
        if row["space"] == "uniform":  # alpha = 1 is a candidate of the search
            assert row["mse_requant"] <= row["mse_minmax"] * (1 + 1e-9), row["name"]
        assert 0.0 < row["alpha"] <= 1.0
    # min-max W3 accuracy from the reference quantizer (float64 vs float32 ties: 1 image slack)
    mm = type(model)(1, 10, 8)
    mm.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, mod in mm.named_modules():
            if name in ref_w:
                w = minmax_reference(ref_w[name], 3, symmetric=False, per_channel=False)
                mod.weight.copy_(torch.from_numpy(w).float())
    expected = top1(mm.eval(), data.x_test, data.y_test)
    assert res["accuracy"]["3"]["minmax"] == pytest.approx(expected, abs=100 / len(data.y_test) + 1e-9)
    for method, acc in res["accuracy"]["8"].items():
        assert abs(acc - res["fp32"]) <= 1.5, method


def test_symmetric_per_channel(cli, digits_model, tmp_path: Path) -> None:
    weights, model = digits_model
    _, res = run_saved(cli, weights, tmp_path / "r", "--bits", "4", "--space", "uniform", "--per-channel",
                       "--symmetric")
    assert set(res["accuracy"]["4"]) == {"minmax", "requant"}
    ref_w = layer_weights(model)
    for row in res["layers"]:
        ref = minmax_reference(ref_w[row["name"]], 4, symmetric=True, per_channel=True)
        ref_mse = float(np.mean((ref_w[row["name"]].astype(np.float64) - ref) ** 2))
        assert row["mse_minmax"] == pytest.approx(ref_mse, rel=1e-3), row["name"]
        assert row["mse_requant"] <= row["mse_minmax"] * (1 + 1e-9), row["name"]
    assert res["curves"][0]["channel"] == 0


def test_activation_bits_are_applied(cli, digits_model, tmp_path: Path) -> None:
    weights, _ = digits_model
    accs = {}
    for act_bits in ("8", "2"):
        out, res = run_saved(cli, weights, tmp_path / f"a{act_bits}", "--bits", "8", "--space", "uniform",
                             "--act-bits", act_bits, "--calib-images", "128")
        assert f"activations A{act_bits}" in out
        assert res["settings"]["act_bits"] == int(act_bits)
        accs[act_bits] = res
    fp32 = accs["8"]["fp32"]
    # 8-bit activations cost almost nothing; 2-bit min-max activations cost accuracy (hooks are live)
    assert min(accs["8"]["accuracy"]["8"].values()) >= fp32 - 2.0
    assert accs["2"]["accuracy"]["8"]["minmax"] < accs["8"]["accuracy"]["8"]["minmax"] - 1.0


def test_recipe_row_matches_quantize_weights(cli, digits_model, tmp_path: Path) -> None:
    """``--recipe beyond``: one more column, equal to calling quantize_weights with the same batches."""
    from requant_plugin import quantize_weights

    weights, model = digits_model
    out, res = run_saved(cli, weights, tmp_path / "r", "--bits", "3", "--recipe", "beyond", "--calib-images", "128")
    assert re.search(r"REQuant alpha\+sqrt\s+REQuant beyond", out)
    assert "recipe row: 'beyond'" in out
    assert res["settings"]["recipe"] == "beyond"
    data = load_digits()
    calib = data.calibration_batches(128, batch_size=64, seed=0)
    qmodel, _ = quantize_weights(model, "beyond", bits=3, calibration_data=calib)
    assert res["accuracy"]["3"]["recipe"] == pytest.approx(top1(qmodel.eval(), data.x_test, data.y_test), abs=1e-9)


def test_mixed_precision_row_matches_mixed_precision_bits(cli, digits_model, tmp_path: Path, monkeypatch) -> None:
    """``--mixed-precision``: the widths are mixed_precision_bits' at the budget (on the recipe row's symmetric
    grid), within it, and the row equals quantize_weights with those widths as overrides."""
    import requant_plugin.pipeline.run as pipeline_run
    from requant_plugin import QuantizeConfig, quantize_weights
    from requant_plugin.options import Space
    from requant_plugin.ptq import mixed_precision_bits

    grids: list[bool] = []

    def spy(*args, **kwargs):
        grids.append(kwargs.get("symmetric", False))
        return mixed_precision_bits(*args, **kwargs)

    monkeypatch.setattr(pipeline_run, "mixed_precision_bits", spy)
    weights, model = digits_model
    out, res = run_saved(cli, weights, tmp_path / "r", "--bits", "3", "--recipe", "beyond", "--mixed-precision",
                         "--calib-images", "128", "--space", "uniform", "--symmetric")
    assert re.search(r"REQuant beyond\s+REQuant beyond mixed", out)
    assert "W3 mixed precision: " in out and " bits per weight" in out
    assert res["settings"]["mixed_precision"] is True
    assert grids == [True]  # the curves on the recipe row's (symmetric) grid
    data = load_digits()
    calib = data.calibration_batches(128, batch_size=64, seed=0)
    widths = mixed_precision_bits(model, calib, 3.0, symmetric=True)  # the curves on the recipe row's grid
    assert res["widths"]["3"] == widths
    sizes = {n: w.size for n, w in layer_weights(model).items()}
    assert sum(sizes[n] * b for n, b in widths.items()) <= 3 * sum(sizes.values())
    qmodel, report = quantize_weights(model, "beyond", bits=3, calibration_data=calib, symmetric=True,
                                      overrides={n: {"bits": b} for n, b in widths.items()})
    assert {x.name: x.bits for x in report.layers} == widths
    assert res["accuracy"]["3"]["recipe_mixed"] == pytest.approx(top1(qmodel.eval(), data.x_test, data.y_test),
                                                                 abs=1e-9)
    # the per-layer table stays the alpha search's (uniform grid), not a recipe row's
    _, alpha_report = quantize_weights(model, QuantizeConfig(bits=3, space=Space.UNIFORM, symmetric=True))
    assert [r["alpha"] for r in res["layers"]] == pytest.approx([x.alpha for x in alpha_report.layers])


def test_end_bits_keep_first_and_last_layer_wider(cli, digits_model, tmp_path: Path) -> None:
    """``--end-bits 8``: the min-max rows of the first and last layer match the 8-bit reference, the
    middle ones the 2-bit one; the recipe row equals quantize_weights(..., end_bits=8)."""
    from requant_plugin import quantize_weights
    from requant_plugin.pipeline.baselines import activation_qparams as act_qparams
    from requant_plugin.pipeline.baselines import calibrate_activations, end_widths
    from requant_plugin.ptq.activation_sim import fake_quant_activations

    weights, model = digits_model
    out, res = run_saved(cli, weights, tmp_path / "r", "--bits", "2", "--space", "uniform", "--end-bits", "8",
                         "--act-bits", "4", "--recipe", "beyond", "--calib-images", "128")
    assert "first and last layers' weights and inputs at 8 bits" in out
    assert res["settings"]["end_bits"] == 8
    ref_w = layer_weights(model)
    names = list(ref_w)
    for row in res["layers"]:
        bits = 8 if row["name"] in (names[0], names[-1]) else 2
        ref = minmax_reference(ref_w[row["name"]], bits, symmetric=False, per_channel=False)
        ref_mse = float(np.mean((ref_w[row["name"]].astype(np.float64) - ref) ** 2))
        assert row["mse_minmax"] == pytest.approx(ref_mse, rel=1e-3), row["name"]
    _, plain = run_saved(cli, weights, tmp_path / "p", "--bits", "2", "--space", "uniform", "--act-bits", "4",
                         "--calib-images", "128")
    wide = {r["name"]: r["mse_minmax"] for r in res["layers"]}
    narrow = {r["name"]: r["mse_minmax"] for r in plain["layers"]}
    assert wide[names[0]] < narrow[names[0]] / 100 and wide[names[1]] == pytest.approx(narrow[names[1]])
    data = load_digits()
    calib = data.calibration_batches(128, batch_size=64, seed=0)
    qmodel, report = quantize_weights(model, "beyond", bits=2, calibration_data=calib, act_bits=4, end_bits=8)
    assert report.act_bits[names[0]] == 8 and report.act_bits[names[1]] == 4
    qp = act_qparams(calibrate_activations(model, calib), 4, "requant", widths=end_widths(model, 8))
    with fake_quant_activations(qmodel.eval(), qp):
        expected = top1(qmodel, data.x_test, data.y_test)
    assert res["accuracy"]["2"]["recipe"] == pytest.approx(expected, abs=1e-9)


def test_mixed_precision_export_carries_the_chosen_widths(digits_model, tmp_path: Path) -> None:
    """``--mixed-precision --export``: each layer's int8 codes in the ONNX stay within its chosen width (the export
    at the lowest --bits budget), not the uniform width."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from requant_plugin.pipeline import PipelineConfig, run_pipeline

    weights, _ = digits_model
    path = tmp_path / "m.onnx"
    cfg = PipelineConfig(data="digits", model="small-cnn", weights=str(weights), bits=(3,), recipe="beyond",
                         mixed_precision=True, export=str(path), calib_images=128, progress=False)
    logged: list[str] = []
    result = run_pipeline(cfg, log=logged.append)
    widths = result.widths[3]
    assert max(widths.values()) > 3, widths  # the budget spent unevenly, so the check below can tell
    assert any("mixed-precision widths of the W3 budget" in line for line in logged)
    assert result.export is not None and not result.export.violations
    codes = {i.name.removesuffix(".weight_quantized"): numpy_helper.to_array(i).astype(int)
             for i in onnx.load(str(path)).graph.initializer if i.name.endswith(".weight_quantized")}
    assert set(codes) == set(widths)
    for name, b in widths.items():
        assert -(2 ** (b - 1)) <= codes[name].min() and codes[name].max() <= 2 ** (b - 1) - 1, name
        narrower = 2 ** (b - 2)  # the width is used: some code lies outside the (b - 1)-bit range
        assert codes[name].min() < -narrower or codes[name].max() > narrower - 1, name
