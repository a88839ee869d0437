"""``REQuantCalibration`` for ``pytorch_lightning`` (``pip install 'requant-plugin[pytorch-lightning]'``).

All logic lives in :mod:`requant_plugin._lightning_core` (and its ``_lightning_*`` helpers); this is
the ``pytorch_lightning`` flavour (``requant_plugin.lightning`` has the same class for ``lightning.pytorch``). Both
classes share the checkpoint state key ``"REQuantCalibration"``, so a checkpoint written with
one flavour restores into the other.

Example::

    from pytorch_lightning import Trainer
    from requant_plugin.pytorch_lightning import REQuantCalibration

    cb = REQuantCalibration("model", mode="fx", num_batches=8)
    trainer = Trainer(max_epochs=5, callbacks=[cb])
    trainer.fit(module, datamodule=dm)    # calibrates a copy in on_fit_end
    trainer.test(module, datamodule=dm)   # tests the quantized copy, module stays float
"""

from __future__ import annotations

try:
    from pytorch_lightning import Callback
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "requant_plugin.pytorch_lightning needs pytorch_lightning: "
        "pip install 'requant-plugin[pytorch-lightning]' (or use requant_plugin.lightning)"
    ) from exc

from ._lightning_core import (
    QuantizedModule,
    REQuantCalibrationCore,
    default_input_fn,
    default_target_fn,
    format_summary,
)

__all__ = ["QuantizedModule", "REQuantCalibration", "default_input_fn", "default_target_fn", "format_summary"]


class REQuantCalibration(REQuantCalibrationCore, Callback):
    """Post-training quantization callback for ``pytorch_lightning``; see
    :class:`requant_plugin._lightning_core.REQuantCalibrationCore` for the arguments."""
