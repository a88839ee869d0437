"""The documented restore: ``Trainer(callbacks=[REQuantCalibration("model", mode="fx")])
.test(lit, dl, ckpt_path=...)`` with no train dataloader anywhere, and the same for
``.validate`` / ``.predict``, in both Lightning flavours."""

from __future__ import annotations

import importlib
from pathlib import Path

import litmods
import pytest
import torch
from torch.utils.data import DataLoader


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
