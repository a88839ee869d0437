"""Calibrators: the ``collect`` / ``compute_range`` / ``reset`` / ``merge`` contract above :mod:`requant_plugin.core`.

One calibrator per file: :class:`WeightCalibrator` (REQuant search on a weight tensor),
:class:`HistogramCalibrator` (streaming histogram of activations), :class:`PinnedCalibrator`
(given weight grids). The torch.ao / torchao observers (:mod:`requant_plugin.observers`) and the
ONNX export's calibration hold one each; see :mod:`.base` for the contract.
"""

from __future__ import annotations

from .base import Calibrator, ClipRange, tensor_key
from .histogram import HistogramCalibrator, histogram_from_state, merge_states
from .pinned import PinnedCalibrator, PinnedQParams
from .sampling import DEFAULT_SAMPLE_SIZE
from .weight import WeightCalibrator

__all__ = [
    "DEFAULT_SAMPLE_SIZE", "Calibrator", "ClipRange", "HistogramCalibrator", "PinnedCalibrator", "PinnedQParams",
    "WeightCalibrator", "histogram_from_state", "merge_states", "tensor_key",
]
