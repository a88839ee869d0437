"""fit -> on_fit_end calibration -> trainer.test with the quantized copy, both Lightning flavours.

One module-scoped run per flavour (a real Trainer on scikit-learn digits); the tests check it
against torch's own FX pipeline, an independent accuracy evaluation, the CSV log and the
checkpoint, and a fresh process restores the quantized metrics from the checkpoint alone.
"""

from __future__ import annotations

import copy
import csv
import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from refs import litmods
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.observer import PerChannelMinMaxObserver
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from requant_plugin.data import evaluate_accuracy
from requant_plugin.zoo import SmallCNN

HERE = Path(__file__).resolve().parent
NUM_BATCHES = 4


class Recorder:
    """input_fn that keeps every input it is asked for."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, batch):
        self.inputs.append(batch[0].detach().clone())
        return batch[0]


def _fit_and_test(flavour: str, tmp: Path, trained_state) -> SimpleNamespace:
    pl, Lit, DM = litmods.make(flavour)
    plugin = importlib.import_module(litmods.PLUGIN[flavour])
    loggers = importlib.import_module(f"{litmods.FLAVOURS[flavour]}.loggers")
    rec = Recorder()
    cb = plugin.REQuantCalibration("model", mode="fx", num_batches=NUM_BATCHES, input_fn=rec,
                                   qconfig_mapping=get_default_qconfig_mapping("x86"), verbose=False)
    logger = loggers.CSVLogger(str(tmp), name="logs")
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb], logger=logger, log_every_n_steps=5,
                                                  limit_train_batches=8))
    model, dm = Lit(), DM()
    model.model.load_state_dict(trained_state)  # fine-tune a trained SmallCNN for 8 steps
    float_module = model.model
    trainer.fit(model, dm)
    calib_inputs = list(rec.inputs)
    before = copy.deepcopy(model.state_dict())
    ckpt = tmp / "calibrated.ckpt"
    trainer.save_checkpoint(str(ckpt))
    results = trainer.test(model, dm, verbose=False)
    return SimpleNamespace(flavour=flavour, cb=cb, model=model, dm=dm, trainer=trainer,
                           float_module=float_module, calib_inputs=calib_inputs, before=before,
                           ckpt=ckpt, results=results[0], log_dir=Path(logger.log_dir))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, trained_state):
    """flavour -> one fit+test run of that flavour (made on first use)."""
    cache: dict[str, SimpleNamespace] = {}

    def get(flavour: str) -> SimpleNamespace:
        if flavour not in cache:
            cache[flavour] = _fit_and_test(flavour, tmp_path_factory.mktemp(flavour), trained_state)
        return cache[flavour]

    return get


@pytest.fixture(params=["lightning", "pytorch_lightning"])
def run(request, runs):
    return runs(request.param)


def test_pl_module_stays_float_and_unchanged(run):
    m = run.model
    assert m.model is run.float_module and type(m.model) is SmallCNN
    after = m.state_dict()
    assert after.keys() == run.before.keys()
    assert all(torch.equal(after[k], run.before[k]) for k in after)
    names = {type(x).__module__ for x in m.modules()}
    assert not any("quantized" in n or "fx" in n for n in names), names
    assert "forward" not in vars(m) and "forward" not in vars(m.model)
    x = litmods.digits().x_test[:8]
    probe = copy.deepcopy(m).eval()  # (a train-mode call would update the BN statistics)
    with torch.no_grad():  # keyword arguments of forward keep working after fit + test
        assert torch.equal(probe(x, temperature=2.0), probe.model(x) / 2.0)


def test_quantized_copy_is_really_quantized(run):
    q = run.cb.quantized_model.module
    kinds = {type(x).__name__ for x in q.modules()}
    assert {"ConvReLU2d", "Linear"} <= kinds
    assert type(q.get_submodule("conv1")).__module__.startswith("torch.ao.nn.intrinsic.quantized")
    assert q.conv1.weight().dtype == torch.qint8


def test_calibration_matches_torch_fx_reference(run):
    """Same float weights and the recorded calibration batches through torch's own FX flow."""
    assert len(run.calib_inputs) == NUM_BATCHES
    ref = prepare_fx(copy.deepcopy(run.float_module).eval(), get_default_qconfig_mapping("x86"),
                     (run.calib_inputs[0],))
    with torch.no_grad():
        for x in run.calib_inputs:
            ref(x)
    ref_state = {k: v for k, v in ref.state_dict().items() if "activation_post_process" in k}
    got = run.cb.state_dict()["observer_state"]
    assert got.keys() == ref_state.keys()
    assert all(torch.equal(got[k], ref_state[k]) for k in got)
    # the input observer saw exactly the calibration inputs
    assert float(got["activation_post_process_0.min_val"]) == float(torch.cat(run.calib_inputs).min())
    ref_q = convert_fx(ref)
    x = litmods.digits().x_test[:100]
    assert torch.equal(ref_q(x), run.cb.quantized_model(x))


def test_test_metrics_are_quantized_and_fp32_side_by_side(run):
    r = run.results
    loader = litmods.digits().loader("test", 128)
    q_acc = evaluate_accuracy(run.cb.quantized_model, loader) / 100
    f_acc = evaluate_accuracy(run.float_module, loader) / 100
    assert r["test_acc"] == pytest.approx(q_acc, abs=1e-6)  # the user's own test_step, quantized
    assert r["requant/quant_acc"] == pytest.approx(q_acc, abs=1e-6)
    assert r["requant/fp32_acc"] == pytest.approx(f_acc, abs=1e-6)
    assert f_acc > 0.9 and abs(q_acc - f_acc) < 0.03
    assert 0.95 < r["requant/top1_agreement"] <= 1.0
    assert r["requant/sqnr_db"] > 20


def test_summary_goes_to_csv_logger(run):
    with open(run.log_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = rows[0].keys()
    for key in ("requant/calibration_batches", "requant/weight/linear/mse",
                "requant/weight/conv1/alpha", "requant/activation/conv1/mse",
                "requant/mean_activation_mse", "requant/quant_acc", "requant/fp32_acc", "test_acc"):
        assert key in cols, key
    logged = {k: float(v) for row in rows for k, v in row.items() if v not in ("", None)}
    assert logged["requant/calibration_batches"] == NUM_BATCHES
    summary = {(r["tensor"], r["layer"]): r for r in run.cb.summary}
    assert logged["requant/weight/conv2/alpha"] == pytest.approx(summary["weight", "conv2"]["alpha"])
    # independent reference for the linear layer (no BN): torch's per-channel symmetric observer
    w = run.float_module.linear.weight.detach()
    obs = PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    obs(w)
    scale, zp = obs.calculate_qparams()
    fq = torch.fake_quantize_per_channel_affine(w, scale, zp.int(), 0, -128, 127)
    ref_mse = float((fq - w).double().pow(2).mean())
    assert logged["requant/weight/linear/mse"] == pytest.approx(ref_mse, rel=1e-5)


def test_checkpoint_is_float_and_state_is_weights_only(run):
    ckpt = torch.load(run.ckpt, weights_only=True)
    plain = SmallCNN(1, 10, 8)
    inner = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    plain.load_state_dict(inner, strict=True)
    assert all(torch.equal(v, run.float_module.state_dict()[k]) for k, v in inner.items())
    state = ckpt["callbacks"]["REQuantCalibration"]
    assert state["calibrated"] is True and state["config"]["mode"] == "fx"
    assert all("activation_post_process" in k for k in state["observer_state"])


def test_fresh_process_reproduces_quantized_metrics(runs, tmp_path):
    """Each flavour's checkpoint, tested by the OTHER flavour in one fresh process."""
    pairs = {"pytorch_lightning": runs("lightning"), "lightning": runs("pytorch_lightning")}
    args = [sys.executable, str(HERE / "fresh_process_script.py")]
    for child_flavour, run in pairs.items():
        args += [child_flavour, str(run.ckpt), str(tmp_path / f"{child_flavour}.json")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=litmods.child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    for child_flavour, run in pairs.items():
        child = json.loads((tmp_path / f"{child_flavour}.json").read_text())
        for key in ("test_acc", "requant/quant_acc", "requant/fp32_acc", "requant/sqnr_db"):
            assert child["results"][key] == pytest.approx(run.results[key], abs=1e-6), key
        assert child["summary"] == run.cb.summary
