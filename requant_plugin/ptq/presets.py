"""The keyword view of the recipes, kept for existing callers (new code: :mod:`.recipes`).

:data:`PRESETS` and :data:`DEFAULTS` spell each recipe, and ``quantize_weights``' defaults, as
the keywords of ``quantize_weights`` (``per_channel=True`` rather than ``PerChannel()``);
:func:`apply_recipe` resolves written keywords against a recipe exactly as
``quantize_weights(..., recipe=...)`` does. Mixed precision lives in :mod:`.mixed_precision`.
"""

from __future__ import annotations

from typing import Any

from .config import QuantizeConfig
from .mixed_precision import allocate_bits, layer_error_curves
from .recipes import RECIPE_REQUIRES, RECIPES, make_config, recipe_fields
from .weights import quantize_beyond

__all__ = [
    "DEFAULTS", "PRESETS", "RECIPE_REQUIRES", "UNSET", "allocate_bits", "apply_recipe", "layer_error_curves",
    "quantize_beyond",
]


class _Unset:
    """A keyword the caller did not write (legacy; ``quantize_weights`` takes ``**options`` now)."""

    def __repr__(self) -> str:
        return "<default>"


#: Marks an unwritten keyword in :func:`apply_recipe`'s ``current``.
UNSET: Any = _Unset()

#: ``quantize_weights``' defaults for the keywords a recipe may set.
DEFAULTS: dict[str, Any] = recipe_fields(QuantizeConfig())

#: Each recipe as the keywords it sets.
PRESETS: dict[str, dict[str, Any]] = {name: recipe_fields(cfg) for name, cfg in RECIPES.items()}


def apply_recipe(recipe: str | None, current: dict[str, Any]) -> dict[str, Any]:
    """Every keyword of :data:`DEFAULTS`: ``current``'s value where the caller wrote it (absent or
    :data:`UNSET`: not written), else the recipe's, else the default.

    Raises:
        ValueError: unknown recipe, or a written keyword the recipe cannot honour
            (:data:`RECIPE_REQUIRES`), naming both.
    """
    written = {k: v for k, v in current.items() if v is not UNSET}
    base = recipe_fields(make_config(recipe, **written))  # validates, as quantize_weights does
    return {key: written.get(key, base[key]) for key in DEFAULTS}
