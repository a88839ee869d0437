"""REQuant observers and quantization configs for torchao pt2e (the documented import path; the code
lives in :mod:`requant_plugin.observers.pt2e`). Without torchao, importing this module raises
:class:`~requant_plugin.deps.MissingDependency` with ``pip install 'requant-plugin[pt2e]'``."""

from __future__ import annotations

from .observers.pt2e import (
    BACKENDS,
    DEFAULT_EPS,
    RELU_MEAN_RATIO,
    ObserverSpec,
    PerChannelREQuantObserver,
    PinnedActivationObserver,
    PinnedWeightObserver,
    REQuantObserver,
    REQuantWeightObserver,
    get_requant_quantization_config,
    get_requant_quantizer,
    get_torchao_default_quantization_config,
    make_quantizer,
)
from .observers.untie import untie_graph_weights

__all__ = [
    "BACKENDS", "DEFAULT_EPS", "RELU_MEAN_RATIO", "ObserverSpec", "PerChannelREQuantObserver",
    "PinnedActivationObserver", "PinnedWeightObserver", "REQuantObserver", "REQuantWeightObserver",
    "get_requant_quantization_config", "get_requant_quantizer", "get_torchao_default_quantization_config",
    "make_quantizer", "untie_graph_weights",
]
