"""Weights held by several modules (tied parameters) in ``quantize_weights``.

A tensor shared by several quantized layers is quantized once, on the grid of the first of them
in registration order; the others are reported as skipped, still sharing it. A quantized layer
whose weight is also held by a module that is not quantized (an ``nn.Embedding`` tied to the
output ``nn.Linear`` of a language model, or a layer the overrides skip) gets its own copy of the
weight, so that module keeps the float values.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

from torch import nn

from .plan import LayerPlan, layer_weight

__all__ = ["resolve_tied_weights"]


def resolve_tied_weights(
    model: nn.Module, plans: Sequence[tuple[LayerPlan, nn.Module]],
) -> tuple[list[tuple[LayerPlan, nn.Module]], dict[str, str]]:
    """Untie the quantized layers' weights from modules that are not quantized, IN PLACE on
    ``model``, and skip every later holder of a weight that an earlier layer quantizes.

    Returns the plans (the later holders marked ``skip``) and ``{layer: reason}`` for those.
    """
    holders: dict[int, list[str]] = {}
    for path, p in model.named_parameters(remove_duplicate=False):
        holders.setdefault(id(p), []).append(path)
    quantized = {f"{plan.name}.weight" if plan.name else "weight" for plan, _ in plans if not plan.skip}
    out: list[tuple[LayerPlan, nn.Module]] = []
    owner: dict[int, str] = {}  # tensor id -> the layer that quantizes it
    skipped: dict[str, str] = {}
    for plan, module in plans:
        w = layer_weight(module)
        paths = holders.get(id(w), [])
        if plan.skip or len(paths) < 2:
            out.append((plan, module))
            continue
        if id(w) in owner:
            why = f"shares its weight with {owner[id(w)]!r}, which quantizes it once on its grid"
            skipped[plan.name] = why
            out.append((dataclasses.replace(plan, skip=True), module))
            continue
        others = [p for p in paths if p not in quantized]
        if others:  # the quantized layers holding it get one new tensor, the others keep the float one
            copy = nn.Parameter(w.detach().clone(), requires_grad=w.requires_grad)
            for path in paths:
                if path in quantized:
                    parent, _, attr = path.rpartition(".")
                    setattr(model.get_submodule(parent), attr, copy)
            warnings.warn(
                f"quantize_weights: the weight of {plan.name!r} is also {', '.join(map(repr, others))}, which is "
                "not a quantized layer: the quantized layers get their own copy of it (untied), "
                f"{', '.join(map(repr, others))} keeps the float values", stacklevel=3)
            w = copy
            holders[id(w)] = [path for path in paths if path in quantized]
        owner[id(w)] = plan.name
        out.append((plan, module))
    return out, skipped
