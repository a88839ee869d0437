"""``REQuantCalibration`` for ``lightning.pytorch`` (``pip install 'requant-plugin[lightning]'``).

All logic lives in :mod:`requant_plugin._lightning_core` (and its ``_lightning_*`` helpers); this is
the ``lightning.pytorch`` flavour (``requant_plugin.pytorch_lightning`` has the same class for ``pytorch_lightning``).

Example::

    from lightning.pytorch import Trainer
    from requant_plugin.lightning import REQuantCalibration

    cb = REQuantCalibration("model", mode="fx", num_batches=8)
    trainer = Trainer(max_epochs=5, callbacks=[cb])
    trainer.fit(module, datamodule=dm)    # calibrates a copy in on_fit_end
    trainer.test(module, datamodule=dm)   # tests the quantized copy, module stays float
"""

from __future__ import annotations

try:
    from lightning.pytorch import Callback
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "requant_plugin.lightning needs Lightning: pip install 'requant-plugin[lightning]' "
        "(or use requant_plugin.pytorch_lightning with pytorch_lightning installed)"
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
    """Post-training quantization callback for ``lightning.pytorch``; see
    :class:`requant_plugin._lightning_core.REQuantCalibrationCore` for the arguments."""
