"""Network-level refinement of REQuant activation ranges (the documented import path; the code lives
in :mod:`requant_plugin.observers.refine`)."""

from __future__ import annotations

from .observers.refine import (
    LAYER_FACTORS,
    RangeRefinement,
    RefineConfig,
    activation_observers,
    refine_activation_ranges,
    simulated,
)

__all__ = [
    "LAYER_FACTORS", "RangeRefinement", "RefineConfig", "activation_observers", "refine_activation_ranges",
    "simulated",
]
