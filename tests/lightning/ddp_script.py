"""Child script of test_merge.py: REQuantCalibration under a real 2-process CPU DDP run.

Usage: PYTHONPATH=<repo>/tests python ddp_script.py OUT_DIR (``refs.litmods`` is imported from there)

``Trainer(accelerator="cpu", devices=2, strategy="ddp")`` re-launches this script for rank 1
(gloo backend). The registered callback calibrates REQuant FX observers in ``on_fit_end`` on each
rank's shard of the train loader; afterwards two more callbacks are calibrated explicitly with
``calibrate(trainer, model)``: torch's default x86 mapping (HistogramObserver) and weights-only
W4. Every rank saves its calibration inputs and states to OUT_DIR/rank<r>.pt.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path


class Recorder:
    def __init__(self) -> None:
        self.inputs = []

    def __call__(self, batch):
        self.inputs.append(batch[0].detach().clone())
        return batch[0]


def main() -> None:
    warnings.simplefilter("ignore")
    import torch
    from refs import litmods
    from torch.ao.quantization import get_default_qconfig_mapping

    from requant_plugin.lightning import REQuantCalibration

    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    pl, Lit, DM = litmods.make("lightning")
    rec = Recorder()
    cb = REQuantCalibration("model", mode="fx", num_batches=3, input_fn=rec, verbose=False)
    trainer = pl.Trainer(**litmods.trainer_kwargs(
        devices=2, strategy="ddp", callbacks=[cb], limit_train_batches=2, limit_val_batches=0,
    ))
    model = Lit()
    trainer.fit(model, DM(batch_size=32))
    rank = trainer.global_rank
    rec_hist = Recorder()
    hist_cb = REQuantCalibration("model", mode="fx", num_batches=2, input_fn=rec_hist, verbose=False,
                                 qconfig_mapping=get_default_qconfig_mapping("x86"))
    hist_cb.calibrate(trainer, model)
    w_cb = REQuantCalibration("model", mode="weights", weight_bits=4, verbose=False)
    w_cb.calibrate(trainer, model)
    torch.save({
        "rank": rank, "world_size": trainer.world_size,
        "requant_state": cb.state_dict(), "requant_inputs": rec.inputs,
        "hist_state": hist_cb.state_dict(), "hist_inputs": rec_hist.inputs,
        "weights_q": w_cb.quantized_model.module.state_dict(),
        "float": model.model.state_dict(),
        "probe_out": cb.quantized_model(litmods.digits().x_test[:64]),
    }, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
