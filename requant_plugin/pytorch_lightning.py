"""``REQuantCalibration`` for ``pytorch_lightning`` (``pip install 'requant-plugin[pytorch-lightning]'``).

The same callback as :mod:`requant_plugin.lightning` (whose Lightning-free modules hold all the
logic), bound to ``pytorch_lightning.Callback``. Both classes share the checkpoint state key
``"REQuantCalibration"``, so a checkpoint written with one flavour restores into the other.

Example::

    from pytorch_lightning import Trainer
    from requant_plugin.pytorch_lightning import REQuantCalibration

    cb = REQuantCalibration("model", mode="fx", num_batches=8)
    trainer = Trainer(max_epochs=5, callbacks=[cb])
    trainer.fit(module, datamodule=dm)    # calibrates a copy in on_fit_end
    trainer.test(module, datamodule=dm)   # tests the quantized copy, module stays float
"""

from __future__ import annotations

from .deps import require
from .lightning.batches import default_input_fn, default_target_fn
from .lightning.callback import REQuantCalibrationCore, bind
from .lightning.config import CalibrationConfig
from .lightning.modules import QuantizedModule
from .lightning.summary import format_summary

__all__ = [
    "CalibrationConfig", "QuantizedModule", "REQuantCalibration", "REQuantCalibrationCore",
    "default_input_fn", "default_target_fn", "format_summary",
]

_pl = require("pytorch_lightning", "requant_plugin.pytorch_lightning (or use requant_plugin.lightning "
              "with lightning installed)")
REQuantCalibration = bind(_pl.Callback, __name__)
