"""REQuant observers for torch.ao quantization (``prepare_fx`` / ``convert_fx``, eager mode).

Drop-in replacements for torch's observers in a ``QConfig``::

    from torch.ao.quantization import QConfig
    from requant_plugin.observers import REQuantObserver, PerChannelREQuantObserver

    qconfig = QConfig(
        activation=REQuantObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=127),
        weight=PerChannelREQuantObserver.with_args(dtype=torch.qint8,
                                                   qscheme=torch.per_channel_symmetric))

* :class:`REQuantObserver`: activations (per tensor), streamed histogram + alpha search.
* :class:`REQuantWeightObserver`: per-tensor weights, exact search on the weight, cached.
* :class:`PerChannelREQuantObserver`: per-channel weights, exact search per channel, cached.

All three accept torch's observer arguments (``dtype``, ``qscheme``, ``quant_min``,
``quant_max``, ``eps``, ...) plus ``search="golden"|"grid"|"minmax"`` and ``alpha`` (pin the
range factor; ``search="minmax"`` reproduces ``MinMaxObserver`` exactly). The weight observers
also take ``space="uniform"|"sqrt"``, ``p`` and ``input_mean_ratio`` (the coherent output-error
term, 0 = REQuant's plain weight MSE; the factories of :mod:`requant_plugin.qconfig` use 0.467);
the activation observer takes ``bins``. See
:mod:`requant_plugin._observer_base` for the algorithm and :mod:`requant_plugin.pt2e` for the
torchao twins (torch.ao observers are ignored by ``convert_pt2e``).
"""

from __future__ import annotations

from torch.ao.quantization.observer import UniformQuantizationObserverBase

from ._activation_observer import ActivationObserverMixin
from ._observer_base import PerChannelWeightObserverMixin, WeightObserverMixin
from ._pinned_observer import PinnedWeightObserverMixin


class REQuantObserver(ActivationObserverMixin, UniformQuantizationObserverBase):
    """Per-tensor REQuant activation observer for torch.ao (see :class:`ActivationObserverMixin`)."""


class REQuantWeightObserver(WeightObserverMixin, UniformQuantizationObserverBase):
    """Per-tensor REQuant weight observer for torch.ao (see :class:`WeightObserverMixin`)."""


class PerChannelREQuantObserver(PerChannelWeightObserverMixin, UniformQuantizationObserverBase):
    """Per-channel REQuant weight observer for torch.ao (see :class:`PerChannelWeightObserverMixin`)."""


class PinnedWeightObserver(PinnedWeightObserverMixin, UniformQuantizationObserverBase):
    """A given weight grid (a ``quantize_weights`` result) for torch.ao (see :class:`PinnedWeightObserverMixin`)."""


__all__ = ["PerChannelREQuantObserver", "PinnedWeightObserver", "REQuantObserver", "REQuantWeightObserver"]
