"""``REQuantCalibration`` for ``lightning.pytorch`` (``pip install 'requant-plugin[lightning]'``).

Example::

    from lightning.pytorch import Trainer
    from requant_plugin.lightning import REQuantCalibration

    cb = REQuantCalibration("model", mode="fx", num_batches=8)
    trainer = Trainer(max_epochs=5, callbacks=[cb])
    trainer.fit(module, datamodule=dm)    # calibrates a copy in on_fit_end
    trainer.test(module, datamodule=dm)   # tests the quantized copy, module stays float

This package is the callback and its parts, all Lightning-free: :mod:`.callback` (the hooks
and the state), :mod:`.config` (:class:`CalibrationConfig`), :mod:`.calibration`, :mod:`.flows`,
:mod:`.merge`, :mod:`.network`, :mod:`.metrics`, :mod:`.summary`, :mod:`.modules`,
:mod:`.batches`, :mod:`.trainer`. Only ``REQuantCalibration`` imports ``lightning.pytorch``, on
first access, so ``requant_plugin.pytorch_lightning`` (the same class for ``pytorch_lightning``)
works without it.
"""

from __future__ import annotations

from typing import Any

from ..deps import require
from .batches import default_input_fn, default_target_fn
from .callback import REQuantCalibrationCore, bind
from .config import MODES, CalibrationConfig
from .modules import QuantizedModule, weights_fingerprint
from .summary import format_summary

__all__ = [
    "MODES", "CalibrationConfig", "QuantizedModule", "REQuantCalibration", "REQuantCalibrationCore",
    "default_input_fn", "default_target_fn", "format_summary", "weights_fingerprint",
]


def __getattr__(name: str) -> Any:
    """``REQuantCalibration``: the callback bound to ``lightning.pytorch.Callback`` (made once)."""
    if name != "REQuantCalibration":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    lightning = require("lightning.pytorch", "requant_plugin.lightning.REQuantCalibration (or use "
                        "requant_plugin.pytorch_lightning with pytorch_lightning installed)")
    cls = bind(lightning.Callback, __name__)
    globals()[name] = cls
    return cls
