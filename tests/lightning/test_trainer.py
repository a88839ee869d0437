"""What the callback asks of the trainer (:mod:`requant_plugin.lightning.trainer`): strategies it
refuses, and the missing dataloaders it reports in ``setup`` / at test start, naming the fix.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from refs import litmods

from requant_plugin.lightning import REQuantCalibration

pl, Lit, DM = litmods.make("lightning")


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
