"""Child process of test_callback.py: ``trainer.test(ckpt_path=...)`` in a fresh process.

Usage: PYTHONPATH=<repo>/tests python fresh_process_script.py FLAVOUR CKPT OUT_JSON [FLAVOUR CKPT OUT_JSON ...]

Builds a fresh LightningModule (random init), a datamodule WITHOUT train data and a callback whose
calibration dataloader raises when iterated, so the quantized model can only come from the
checkpoint's callback state plus its float weights.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


class Forbidden:
    def __iter__(self):
        raise AssertionError("the callback tried to calibrate instead of using the checkpoint state")


def run_one(flavour: str, ckpt: str, out: str) -> None:
    import importlib

    from refs import litmods
    from torch.ao.quantization import get_default_qconfig_mapping

    pl, Lit, DM = litmods.make(flavour)
    plugin = importlib.import_module(litmods.PLUGIN[flavour])
    cb = plugin.REQuantCalibration("model", mode="fx", num_batches=4, dataloader=Forbidden(),
                                   qconfig_mapping=get_default_qconfig_mapping("x86"), verbose=False)
    trainer = pl.Trainer(**litmods.trainer_kwargs(callbacks=[cb]))
    model = Lit(seed=123)  # different init: the checkpoint must supply the weights
    results = trainer.test(model, DM(with_train=False), ckpt_path=ckpt, verbose=False)
    assert type(model.model).__name__ == "SmallCNN"
    Path(out).write_text(json.dumps({"results": results[0], "summary": cb.summary}))


def main() -> None:
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    args = sys.argv[1:]
    for i in range(0, len(args), 3):
        run_one(*args[i : i + 3])


if __name__ == "__main__":
    main()
