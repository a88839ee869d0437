"""The REQuant observer classes for torch.ao quantization (``prepare_fx`` / ``convert_fx``, eager mode).

Each is a mixin (the adapter over its calibrator) on torch.ao's ``UniformQuantizationObserverBase``;
:mod:`requant_plugin.observers.pt2e` holds the torchao twins.
"""

from __future__ import annotations

from torch.ao.quantization.observer import UniformQuantizationObserverBase

from .activation import ActivationObserverMixin
from .pinned import PinnedWeightObserverMixin
from .weight import PerChannelWeightObserverMixin, WeightObserverMixin

__all__ = ["PerChannelREQuantObserver", "PinnedWeightObserver", "REQuantObserver", "REQuantWeightObserver"]


class REQuantObserver(ActivationObserverMixin, UniformQuantizationObserverBase):
    """Per-tensor REQuant activation observer for torch.ao (see :class:`ActivationObserverMixin`)."""


class REQuantWeightObserver(WeightObserverMixin, UniformQuantizationObserverBase):
    """Per-tensor REQuant weight observer for torch.ao (see :class:`WeightObserverMixin`)."""


class PerChannelREQuantObserver(PerChannelWeightObserverMixin, UniformQuantizationObserverBase):
    """Per-channel REQuant weight observer for torch.ao (see :class:`PerChannelWeightObserverMixin`)."""


class PinnedWeightObserver(PinnedWeightObserverMixin, UniformQuantizationObserverBase):
    """A given weight grid (a ``quantize_weights`` result) for torch.ao (see :class:`PinnedWeightObserverMixin`)."""
