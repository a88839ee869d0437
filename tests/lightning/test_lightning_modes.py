"""Weights-only and pt2e modes, the test-time and explicit triggers, ModelPruning, misconfiguration.

These runs skip ``fit`` where they can: the float weights come from a SmallCNN trained in plain
torch (``trained_state``), and calibration happens in ``on_test_start`` or ``calibrate()``.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from types import SimpleNamespace

import litmods
import pytest
import torch
from torch.ao.quantization import get_default_qconfig_mapping

from requant_plugin.data import evaluate_accuracy
from requant_plugin.lightning import REQuantCalibration
from requant_plugin.pytorch_lightning import REQuantCalibration as PLREQuantCalibration

pl, Lit, DM = litmods.make("lightning")


def trained_module(state):
    m = Lit()
    m.model.load_state_dict(state)
    return m


def test_same_class_name_in_both_flavours():
    import lightning.pytorch as L
    import pytorch_lightning as PL

    assert REQuantCalibration.__name__ == PLREQuantCalibration.__name__ == "REQuantCalibration"
    assert isinstance(REQuantCalibration(), L.Callback) and not isinstance(REQuantCalibration(), PL.Callback)
    assert isinstance(PLREQuantCalibration(), PL.Callback)
    assert REQuantCalibration().state_key == PLREQuantCalibration().state_key


def test_core_does_not_import_lightning():
    """No import of lightning / pytorch_lightning anywhere in the core modules (static check):
    ``_lightning_core`` and every ``requant_plugin/_lightning_*.py`` it is built from."""
    import ast

    import requant_plugin._lightning_core as core

    files = sorted(Path(core.__file__).parent.glob("_lightning_*.py"))
    assert Path(core.__file__) in files and len(files) > 1
    for path in files:
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert names, path.name
        assert not [m for m in names if m.split(".")[0] in ("lightning", "pytorch_lightning")], path.name


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


def test_changed_weights_trigger_recalibration(trained_state):
    model = trained_module(trained_state)
    cb = REQuantCalibration("model", mode="fx", num_batches=2, verbose=False,
                            qconfig_mapping=get_default_qconfig_mapping("x86"))
    cb.calibrate(None, model, dataloader=[(x,) for x in litmods.digits().calibration_batches(64, 32)])
    first = cb.state_dict()["fingerprint"]
    with torch.no_grad():
        model.model.linear.bias.add_(0.5)
    # no train data: a stale calibration must be refused, not silently used
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
    with pytest.raises(RuntimeError, match="float weights changed since calibration"):
        trainer.test(model, DM(with_train=False), verbose=False)
    assert type(model.model).__name__ == "SmallCNN"
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
    trainer.test(model, DM(), verbose=False)  # with train data it recalibrates
    assert cb.state_dict()["fingerprint"] != first
    q_bias = cb.quantized_model.module.linear.bias()
    assert torch.allclose(q_bias, model.model.linear.bias, atol=1e-6)


def test_model_pruning_in_the_same_trainer(tmp_path, trained_state):
    callbacks = importlib.import_module("lightning.pytorch.callbacks")
    prune = callbacks.ModelPruning("l1_unstructured", amount=0.5, verbose=0)
    cb = REQuantCalibration("model", mode="fx", num_batches=2, verbose=False,
                            qconfig_mapping=get_default_qconfig_mapping("x86"))
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[prune, cb], default_root_dir=str(tmp_path),
                                                  limit_train_batches=6))
    model, dm = trained_module(trained_state), DM()
    trainer.fit(model, dm)
    res = trainer.test(model, dm, verbose=False)[0]
    # pruning is permanent in the float module, and carried into the quantized weights
    w = model.model.conv2.weight.detach()
    assert (w == 0).float().mean() >= 0.5
    qw = cb.quantized_model.module.conv2.weight()
    assert (qw.int_repr() == 0).float().mean() >= 0.5
    assert torch.equal(qw.dequantize() == 0, qw.int_repr() == 0)
    assert res["requant/top1_agreement"] > 0.9
    path = tmp_path / "pruned.ckpt"
    trainer.save_checkpoint(str(path))
    sd = torch.load(path, weights_only=True)["state_dict"]
    assert not any(k.endswith(("_orig", "_mask")) for k in sd)
    Lit().load_state_dict(sd, strict=True)


def test_pruning_hooks_are_baked_into_the_copy_only(trained_state):
    from torch.nn.utils import prune

    model = trained_module(trained_state)
    prune.l1_unstructured(model.model.conv2, "weight", amount=0.6)
    cb = REQuantCalibration("model", mode="fx", num_batches=1, verbose=False,
                            qconfig_mapping=get_default_qconfig_mapping("x86"))
    q = cb.calibrate(None, model, dataloader=[(litmods.digits().x_train[:64],)])
    assert hasattr(model.model.conv2, "weight_orig")  # the user's pruning reparametrization stays
    assert (q.module.conv2.weight().int_repr() == 0).float().mean() >= 0.6


def test_deterministic_trainer(trained_state):
    cb = REQuantCalibration("model", mode="fx", num_batches=1, verbose=False,
                            qconfig_mapping=get_default_qconfig_mapping("x86"))
    try:
        trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb], deterministic=True))
        res = trainer.test(trained_module(trained_state), DM(), verbose=False)[0]
    finally:
        torch.use_deterministic_algorithms(False)
    assert res["test_acc"] > 0.8


# --------------------------------------------------------------------------- misconfiguration


def test_missing_submodule_raises_in_setup():
    cb = REQuantCalibration("net", mode="weights")
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
    with pytest.raises(ValueError, match=r"no submodule 'net'.*\['model'\].*attr="):
        trainer.test(Lit(), DM(), verbose=False)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_missing_val_dataloader_raises_in_setup():
    cb = REQuantCalibration("model", mode="fx", dataloader="val")
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
    with pytest.raises(ValueError, match="no val dataloader"):
        trainer.fit(Lit(), train_dataloaders=litmods.digits().loader("train", 64))


def test_test_without_calibration_data_raises_in_setup():
    cb = REQuantCalibration("model", mode="fx")
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
    with pytest.raises(ValueError, match="no train dataloader to calibrate on"):
        trainer.test(Lit(), dataloaders=litmods.digits().loader("test", 128), verbose=False)


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed", "spawn"])
def test_unsupported_strategy_raises_in_setup(strategy):
    from lightning.pytorch import strategies

    if strategy == "fsdp":
        obj = strategies.FSDPStrategy()
    elif strategy == "spawn":
        obj = strategies.DDPStrategy(start_method="spawn")
    else:
        obj = type("DeepSpeedStrategy", (strategies.DDPStrategy,), {})()
    cb = REQuantCalibration("model", mode="weights")
    with pytest.raises(ValueError, match="strategy='ddp'"):
        cb.setup(SimpleNamespace(strategy=obj), Lit(), "fit")


def test_bad_arguments_raise_at_construction():
    with pytest.raises(ValueError, match="mode must be one of"):
        REQuantCalibration(mode="qat")
    with pytest.raises(ValueError, match="weight_bits"):
        REQuantCalibration(weight_bits=1)
    with pytest.raises(ValueError, match="use quantizer= for mode='pt2e'"):
        REQuantCalibration(mode="pt2e", qconfig_mapping=get_default_qconfig_mapping("x86"))
    with pytest.raises(ValueError, match="dataloader must be"):
        REQuantCalibration(dataloader="test")


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


def test_export_onnx_requires_data_mode():
    with pytest.raises(ValueError, match="export_onnx needs calibration data"):
        REQuantCalibration(mode="weights", export_onnx="x.onnx")
