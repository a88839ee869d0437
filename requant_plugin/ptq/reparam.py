"""Layers whose ``weight`` is computed, not stored: weight normalisation and spectral normalisation
(``torch.nn.utils.parametrizations`` or the older ``weight_norm`` / ``spectral_norm`` hooks).

Writing a quantized tensor into such a ``weight`` is lost at the next forward (the parametrization
recomputes it from ``weight_g`` / ``weight_v`` or ``weight_orig``), so ``quantize_weights`` would
report layers it never changed. :func:`bake_computed_weights` replaces the computation by its current
result, a plain Parameter (what inference computes), before the layers are quantized.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import nn
from torch.nn.utils import parametrize, remove_spectral_norm, remove_weight_norm
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

__all__ = ["bake_computed_weights"]


def _hook_kind(module: nn.Module) -> str | None:
    """``"weight_norm"`` / ``"spectral_norm"`` when the older hook computes ``module.weight``."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm) and hook.name == "weight":
            return "weight_norm"
        if isinstance(hook, SpectralNorm) and hook.name == "weight":
            return "spectral_norm"
    return None


def bake_computed_weights(layers: Sequence[tuple[str, nn.Module]], *, warn: bool = True) -> list[str]:
    """IN PLACE: give every layer of ``layers`` whose weight is computed a plain Parameter holding the
    current value (with ``warn``, a warning names them); returns their names. Raises ValueError naming a
    layer whose weight is still not stored on it (a Parameter or buffer) afterwards (another reparametrization)."""
    baked = []
    for name, module in layers:
        if parametrize.is_parametrized(module, "weight"):
            # removing deletes the property from the module's class, which a deep copy shares with the
            # user's model: give this module a class of its own first
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            baked.append(name)
        elif (kind := _hook_kind(module)) is not None:
            (remove_weight_norm if kind == "weight_norm" else remove_spectral_norm)(module)
            baked.append(name)
        if "weight" not in module._parameters and "weight" not in module._buffers:  # stored, so writable
            raise ValueError(
                f"layer {name!r}: its weight is computed by something quantize_weights does not know "
                f"({type(module.weight).__name__}), so a quantized weight written there would be lost; make it a "
                f"plain Parameter first, or skip the layer with overrides={{{name!r}: {{'skip': True}}}}")
    if baked and warn:
        warnings.warn(f"quantize_weights: {baked} compute their weight (weight/spectral normalisation): the "
                      "quantized model holds its current value as a plain weight", stacklevel=3)
    return baked
