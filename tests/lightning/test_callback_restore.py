"""The documented restore: ``Trainer(callbacks=[REQuantCalibration("model", mode="fx")])
.test(lit, dl, ckpt_path=...)`` with no train dataloader anywhere, and the same for
``.validate`` / ``.predict``, in both Lightning flavours; a state whose float weights changed is
refused without data and recalibrated with it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from refs import litmods
from torch.ao.quantization import get_default_qconfig_mapping
from torch.utils.data import DataLoader

from requant_plugin.lightning import REQuantCalibration


def _calibrated_checkpoint(flavour: str, state: dict[str, torch.Tensor], path: Path
                           ) -> tuple[torch.Tensor, float]:
    pl, Lit, _ = litmods.make(flavour)
    plugin = importlib.import_module(litmods.PLUGIN[flavour])
    data = litmods.digits()
    module = Lit()
    module.model.load_state_dict(state)
    cb = plugin.REQuantCalibration("model", mode="fx", num_batches=2, verbose=False)
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb], limit_train_batches=2))
    trainer.fit(module, data.loader("train", 64, shuffle=True, seed=0))
    trainer.save_checkpoint(str(path))
    acc = trainer.test(module, data.loader("test", 128), verbose=False)[0]["test_acc"]
    with torch.no_grad():
        return cb.quantized_model(data.x_test[:64]), acc


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
@pytest.mark.parametrize("flavour", ["lightning", "pytorch_lightning"])
def test_documented_restore_needs_no_train_dataloader(flavour, trained_state, tmp_path, capsys):
    pl, Lit, _ = litmods.make(flavour)
    plugin = importlib.import_module(litmods.PLUGIN[flavour])
    data = litmods.digits()
    ckpt = tmp_path / "c.ckpt"
    expected, acc = _calibrated_checkpoint(flavour, trained_state, ckpt)
    for stage in ("test", "validate", "predict"):
        cb = plugin.REQuantCalibration("model", mode="fx")  # exactly the documented call
        trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
        lit = Lit(seed=7)  # the checkpoint supplies the float weights
        if stage == "test":
            res = trainer.test(lit, data.loader("test", 128), ckpt_path=str(ckpt), verbose=False)
            assert res[0]["test_acc"] == pytest.approx(acc, abs=1e-6)
        elif stage == "validate":
            trainer.validate(lit, data.loader("test", 128), ckpt_path=str(ckpt), verbose=False)
        else:
            trainer.predict(lit, DataLoader(data.x_test[:32], batch_size=32), ckpt_path=str(ckpt))
        assert cb.quantized_model is not None, stage
        with torch.no_grad():
            assert torch.equal(cb.quantized_model(data.x_test[:64]), expected), stage
        assert type(lit.model).__name__ == "SmallCNN"
    capsys.readouterr()


def test_changed_weights_trigger_recalibration(trained_state):
    pl, Lit, DM = litmods.make("lightning")
    model = Lit()
    model.model.load_state_dict(trained_state)
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
