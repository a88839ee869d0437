"""REQuant observers for torch.ao quantization (``prepare_fx`` / ``convert_fx``, eager mode) and their spec.

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
* :class:`PinnedWeightObserver`: the grids of a ``quantize_weights`` result.

All accept torch's observer arguments (``dtype``, ``qscheme``, ``quant_min``, ``quant_max``,
``eps``, ...) plus ``search="golden"|"grid"|"minmax"`` and ``alpha`` (pin the range factor;
``search="minmax"`` reproduces ``MinMaxObserver`` exactly). An activation range too small for the
smallest scale ``eps`` (pt2e's default ``2**-12``) gets a :class:`ScaleFloorWarning` with the fix.
The weight observers also take ``space="uniform"|"sqrt"``, ``p`` and ``input_mean_ratio`` (the
coherent output-error term, 0 = REQuant's plain weight MSE; the factories use 0.467); the activation
observer takes ``bins``.

Layout, by role: :mod:`.base` (what every observer shares), :mod:`.weight`, :mod:`.activation`,
:mod:`.pinned` (the adapters over :mod:`requant_plugin.calib`'s calibrators), :mod:`.ao` (the
torch.ao classes), :mod:`.spec` (:class:`ObserverSpec`, one spec for both flows), :mod:`.fx`
(QConfig factories, also :mod:`requant_plugin.qconfig`), :mod:`.pt2e` (torchao twins and
quantizer factories, also :mod:`requant_plugin.pt2e`; imported only on request, torchao is
optional), :mod:`.refine` (network-level range refinement), :mod:`.flows` (the flows end to end).
"""

from __future__ import annotations

from ..calib.sampling import DEFAULT_SAMPLE_SIZE
from .activation import ScaleFloorWarning
from .ao import PerChannelREQuantObserver, PinnedWeightObserver, REQuantObserver, REQuantWeightObserver
from .base import RELU_MEAN_RATIO
from .fx import get_requant_qconfig, get_requant_qconfig_mapping
from .pinned import pinned_grids, pinned_weight_args
from .spec import ObserverSpec

__all__ = [
    "DEFAULT_SAMPLE_SIZE", "RELU_MEAN_RATIO", "ObserverSpec", "PerChannelREQuantObserver", "PinnedWeightObserver",
    "REQuantObserver", "REQuantWeightObserver", "ScaleFloorWarning",
    "get_requant_qconfig", "get_requant_qconfig_mapping",
    "pinned_grids", "pinned_weight_args",
]
