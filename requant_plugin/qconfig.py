"""Ready torch.ao ``QConfig`` / ``QConfigMapping`` objects with REQuant observers (the documented
import path; the code lives in :mod:`requant_plugin.observers.fx`, the options in
:class:`~requant_plugin.observers.spec.ObserverSpec`)."""

from __future__ import annotations

from .observers.fx import (
    BACKENDS,
    SYMMETRIC_WEIGHT_BACKENDS,
    activation_range,
    get_requant_qconfig,
    get_requant_qconfig_mapping,
    weight_range,
)
from .observers.spec import ObserverSpec

__all__ = [
    "BACKENDS", "SYMMETRIC_WEIGHT_BACKENDS", "ObserverSpec", "activation_range", "get_requant_qconfig",
    "get_requant_qconfig_mapping", "weight_range",
]
