"""One calibration (:mod:`requant_plugin.lightning.calibration`): weights-only and pt2e modes at
test start, the explicit ``calibrate()``, FX below 8 bits, the ONNX export, and a ``quantize_kwargs``
recipe that the callback's grid defaults do not override.

These runs skip ``fit``: the float weights come from a SmallCNN trained in plain torch
(``trained_state``), and calibration happens in ``on_test_start`` or ``calibrate()``.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from refs import litmods
from torch.ao.quantization import get_default_qconfig_mapping

from requant_plugin import quantize_weights
from requant_plugin.data import evaluate_accuracy
from requant_plugin.lightning import REQuantCalibration
from requant_plugin.lightning.calibration import quantize_weights_only

pl, Lit, DM = litmods.make("lightning")


def trained_module(state):
    m = Lit()
    m.model.load_state_dict(state)
    return m


def test_weights_only_w4_needs_no_data(trained_state):
    """trainer.test without fit and without train data: W4 REQuant weights are built at test start."""
    model = trained_module(trained_state)
    float_module = model.model
    cb = REQuantCalibration("model", mode="weights", weight_bits=4, space="sqrt", verbose=False)
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
    res = trainer.test(model, DM(with_train=False), verbose=False)[0]
    assert model.model is float_module
    q = cb.quantized_model.module
    for name in ("conv1", "conv2", "linear"):
        w = q.get_submodule(name).weight.detach()
        assert not torch.equal(w, float_module.get_submodule(name).weight)
        # 4-bit per-channel grid (in the transformed space): at most 16 distinct values per channel
        assert max(len(torch.unique(row)) for row in w.flatten(1)) <= 16
    loader = litmods.digits().loader("test", 128)
    q_acc = evaluate_accuracy(q, loader) / 100
    f_acc = evaluate_accuracy(float_module, loader) / 100
    assert res["test_acc"] == pytest.approx(q_acc, abs=1e-6)
    assert res["requant/fp32_acc"] == pytest.approx(f_acc, abs=1e-6)
    assert f_acc - q_acc < 0.05
    rows = {r["layer"]: r for r in cb.summary}
    assert set(rows) == {"conv1", "conv2", "linear"} and all(r["bits"] == 4 for r in rows.values())
    assert all(0 < r["alpha"] <= 1 for r in rows.values())


def test_weights_only_end_bits_through_quantize_kwargs(trained_state):
    """``quantize_kwargs={"end_bits": 8}`` reaches quantize_weights through a real Trainer: the first
    and last layer on 8-bit grids, the middle one on the 4-bit grid, as the summary says."""
    model = trained_module(trained_state)
    cb = REQuantCalibration("model", mode="weights", weight_bits=4, space="sqrt", verbose=False,
                            quantize_kwargs={"end_bits": 8})
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
    trainer.test(model, DM(with_train=False), verbose=False)
    q = cb.quantized_model.module
    levels = {n: max(len(torch.unique(row)) for row in q.get_submodule(n).weight.detach().flatten(1))
              for n in ("conv2", "linear")}  # conv1's rows hold 9 values only
    assert levels["conv2"] <= 16 < levels["linear"] <= 256
    assert {r["layer"]: r["bits"] for r in cb.summary} == {"conv1": 8, "conv2": 4, "linear": 8}
    ref, _ = quantize_weights(trained_module(trained_state).model, 4, space="sqrt", per_channel=True, end_bits=8)
    for a, b in zip(q.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def pt2e_run(trained_state):
    pytest.importorskip("torchao")
    model = trained_module(trained_state)
    cb = REQuantCalibration("model", mode="pt2e", num_batches=3, verbose=False)
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
    res = trainer.test(model, DM(), verbose=False)[0]  # calibrates at test start on train batches
    return SimpleNamespace(model=model, cb=cb, res=res)


def test_pt2e_calibrates_before_test(pt2e_run):
    q = pt2e_run.cb.quantized_model.module
    targets = {str(n.target) for n in q.graph.nodes}
    assert any("quantized_decomposed.quantize_per_tensor" in t for t in targets)
    assert any("quantized_decomposed.dequantize_per_channel" in t for t in targets)
    res = pt2e_run.res
    assert res["test_acc"] == pytest.approx(res["requant/quant_acc"], abs=1e-6)
    assert res["requant/fp32_acc"] - res["test_acc"] < 0.03
    kinds = {r["tensor"] for r in pt2e_run.cb.summary}
    assert kinds == {"weight", "activation"}
    assert type(pt2e_run.model.model).__name__ == "SmallCNN"


def test_pt2e_state_rebuilds_without_data(pt2e_run, trained_state):
    state = pt2e_run.cb.state_dict()
    cb = REQuantCalibration("model", mode="pt2e", num_batches=3, verbose=False,
                            dataloader=iter(()))  # empty: calibrating would fail
    cb.load_state_dict(copy.deepcopy(state))
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
    res = trainer.test(trained_module(trained_state), DM(with_train=False), verbose=False)[0]
    assert res["test_acc"] == pytest.approx(pt2e_run.res["test_acc"], abs=1e-7)
    x = litmods.digits().x_test[:64]
    assert torch.equal(cb.quantized_model(x), pt2e_run.cb.quantized_model(x))


def test_explicit_calibrate_without_trainer(trained_state):
    model = trained_module(trained_state)
    before = copy.deepcopy(model.state_dict())
    batches = [(x,) for x in litmods.digits().calibration_batches(128, 32)]
    cb = REQuantCalibration("model", mode="fx", qconfig_mapping=get_default_qconfig_mapping("x86"),
                            verbose=False)
    q = cb.calibrate(None, model, dataloader=batches)
    assert cb.calibrated and cb.state_dict()["batches"] == 4
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    x = litmods.digits().x_test
    agree = (q(x).argmax(1) == model.model(x).argmax(1)).float().mean()
    assert agree > 0.95


def test_fx_sub8_bit_weights_use_the_decomposed_reference(trained_state):
    """W4A8 through the default (REQuant) FX mapping: the lowered x86 kernels would clamp to
    int8, so the callback converts to torch's decomposed reference graph, which keeps 4 bits."""
    pytest.importorskip("requant_plugin.qconfig")
    model = trained_module(trained_state)
    cb = REQuantCalibration("model", mode="fx", weight_bits=4, num_batches=2, verbose=False)
    q = cb.calibrate(None, model, dataloader=litmods.digits().loader("train", 64))
    conv = q.module.conv2[0]
    assert (conv.weight_quant_min, conv.weight_quant_max) == (-8, 7)
    w = conv.get_weight()
    assert max(len(torch.unique(row)) for row in w.flatten(1)) <= 16
    assert cb.state_dict()["config"]["observers"] == "requant"
    assert {r["bits"] for r in cb.summary if r["tensor"] == "weight"} == {4}
    loader = litmods.digits().loader("test", 256)
    assert evaluate_accuracy(model.model, loader) - evaluate_accuracy(q, loader) < 5


def test_export_onnx_after_calibration(trained_state, tmp_path):
    export = pytest.importorskip("requant_plugin.export", reason="requant_plugin.export not installed")
    if not hasattr(export, "export_onnx_qdq"):
        pytest.skip("requant_plugin.export has no export_onnx_qdq yet")
    ort = pytest.importorskip("onnxruntime")
    model = trained_module(trained_state)
    path = tmp_path / "digits.int8.onnx"
    cb = REQuantCalibration("model", mode="fx", num_batches=2, verbose=False, export_onnx=str(path),
                            space="uniform", qconfig_mapping=get_default_qconfig_mapping("x86"))
    cb.calibrate(None, model, dataloader=litmods.digits().loader("train", 64))
    assert path.is_file() and cb.export_report is not None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = litmods.digits().x_test
    (logits,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    agree = (torch.from_numpy(logits).argmax(1) == model.model(x).argmax(1)).float().mean()
    assert agree > 0.95
    ops = {n.op_type for n in __import__("onnx").load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


# --------------------------------------------------------------------------- recipe in quantize_kwargs


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).eval()


@pytest.mark.parametrize(("written", "expected_space"), [({}, "uniform"), ({"space": "sqrt"}, "sqrt")])
def test_recipe_in_quantize_kwargs_sets_the_grid(written: dict[str, str], expected_space: str) -> None:
    """``recipe="data-free"`` is per-channel uniform: the callback's own defaults (sqrt) must not
    replace it, while a ``space`` the user wrote on the callback still wins."""
    net = _net()
    cb = REQuantCalibration(mode="weights", weight_bits=4, verbose=False, progress=False,
                            quantize_kwargs={"recipe": "data-free", "input_shape": (3, 8, 8)}, **written)
    got, _ = quantize_weights_only(_net(), cb.config, False)
    ref, report = quantize_weights(net, 4, recipe="data-free", input_shape=(3, 8, 8), **written)
    assert report.settings["space"] == expected_space and report.settings["per_channel"] is True
    for a, b in zip(got.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_defaults_without_recipe_are_sqrt_per_channel() -> None:
    cb = REQuantCalibration(mode="weights", weight_bits=4, verbose=False, progress=False)
    got, _ = quantize_weights_only(_net(), cb.config, False)
    ref, _ = quantize_weights(_net(), 4, space="sqrt", per_channel=True)
    for a, b in zip(got.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- export keyword precedence


@pytest.mark.parametrize(("export_kwargs", "sent"), [
    ({}, {"per_channel": True}),
    ({"granularity": "written"}, {"granularity": "written"}),
    ({"per_channel": False}, {"per_channel": False}),
])
def test_export_kwargs_win_over_the_callback_grid(monkeypatch, export_kwargs, sent):
    """``granularity`` in ``export_kwargs`` is the user's choice: the callback's own ``per_channel``
    default must not be sent beside it (the export refuses both at once)."""
    from requant_plugin.lightning import CalibrationConfig, calibration

    calls = []
    monkeypatch.setattr(calibration, "export_fn", lambda: lambda *a, **kw: calls.append(kw))
    config = CalibrationConfig(mode="fx", export_onnx="m.onnx", export_kwargs=export_kwargs)
    calibration.export_onnx(config, torch.nn.Linear(2, 2), [(torch.zeros(1, 2),)])
    (kw,) = calls
    grid = {k: kw[k] for k in ("per_channel", "granularity") if k in kw}
    assert grid == sent and kw["space"] == "sqrt"
