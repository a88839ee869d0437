"""Named recipes: plain :class:`QuantizeConfig` instances, and what each one cannot give up.

Change a recipe with ``dataclasses.replace(RECIPES["beyond"], bits=3)`` (or pass keywords to
``quantize_weights(model, "beyond", bits=3)``): what the caller writes always wins, except a
value that contradicts what the recipe is named for (:data:`RECIPE_REQUIRES`, e.g.
``"beyond-tensorrt"`` with ``symmetric=False``), which raises. Measured on the shared CIFAR-10
ResNets in ``docs/results-beyond.md``:

* ``"paper"``: the paper's setting, per-tensor asymmetric alpha on ``sign(w)|w|^0.5`` (first
  and last layers uniform), weight MSE, no data.
* ``"paper+"``: the paper's grid with the output objective and bias correction (data).
* ``"beyond"``: the recommended mode: per-channel asymmetric UNIFORM ranges (integer zero
  points, expressible by the observers, pt2e and ONNX Q/DQ), output objective, error-feedback
  rounding on that grid (candidate ranges up to 1.4x wider, then each channel's grid refitted by
  least squares), each layer matched to the float output from the partly quantized model's
  inputs (``inputs="quantized"``, the pull towards the float weight cross-validated per layer) with
  sequential bias correction (data).
* ``"beyond-tensorrt"``: ``"beyond"`` on the symmetric TensorRT grid (zero point 0), the searched grid only.
* ``"beyond-codebook"``: ``"beyond"`` on the transform grid with ``p = 0.75`` per channel
  (non-uniform codebook; storage / fake-quant only).
* ``"data-free"``: per-channel uniform weight-MSE alpha with bias correction from the
  BatchNorm statistics (needs ``input_shape``, no data).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from ..options import BiasCorrection, Convention, Inputs, Objective, PerChannel, PerTensor, Rounding, Space
from .config import QuantizeConfig, translate_legacy

__all__ = [
    "RECIPES", "RECIPE_FIELDS", "RECIPE_REQUIRES", "check_recipe", "make_config", "recipe", "recipe_fields",
]

#: The fields a recipe chooses (the rest are run settings: bits, calibration_rows, seed, ...).
RECIPE_FIELDS: tuple[str, ...] = (
    "space", "symmetric", "granularity", "fold_bn", "search", "p", "objective", "bias_correction",
    "rounding", "inputs", "transform_first_last", "convention",
)

#: The feedback rounding's candidate ranges of the weights-only ``"beyond"`` recipe: the searched one and 1.1-1.4
#: times it (wider only: narrower candidates lowered the layer error but raised the network's on a held-out
#: network). ``"beyond-tensorrt"`` (W/A deployments) keeps the searched range: at W4A4 through pt2e the wider
#: grids raised the output error.
FEEDBACK_WIDEN: tuple[float, ...] = (1.0, 1.1, 1.2, 1.3, 1.4)

#: The target damps each layer of the ``"beyond"`` recipes chooses from by two-fold cross-validation
#: (``target_damp``): on the development split (docs/dev-split.md, sections dev-w2-damp-cv, dev-w4-damp-cv and
#: dev-w4a4-damp-cv, two seeds) the choice lowered the KL to the float network against the fixed 0.01 at W2 by
#: 13 / 3 / 8 / 2 % (MobileNetV2 / ResNet-20 / VGG / ResNet-56), at W4 by 15 / 2 / 5 / 3 % and in the pt2e W4A4
#: graph by 12 / 5 / 7 % (MobileNetV2 / ResNet-20 / ResNet-56).
TARGET_DAMPS: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)

#: Every recipe, by name: the full config it stands for (``bits`` is the run's, default 4).
RECIPES: dict[str, QuantizeConfig] = {
    "paper": QuantizeConfig(space=Space.SQRT, p=0.5, granularity=PerTensor(), symmetric=False,
                            objective=Objective.WEIGHT, recipe="paper"),
    "paper+": QuantizeConfig(space=Space.SQRT, p=0.5, granularity=PerTensor(), symmetric=False,
                             objective=Objective.OUTPUT, bias_correction=BiasCorrection.PLAIN,
                             recipe="paper+"),
    "beyond": QuantizeConfig(space=Space.UNIFORM, granularity=PerChannel(), symmetric=False,
                             objective=Objective.OUTPUT, bias_correction=BiasCorrection.SEQUENTIAL,
                             rounding=Rounding.FEEDBACK, feedback_widen=FEEDBACK_WIDEN, feedback_refit=True,
                             inputs=Inputs.QUANTIZED, target_damp=TARGET_DAMPS, recipe="beyond"),
    "beyond-tensorrt": QuantizeConfig(space=Space.UNIFORM, granularity=PerChannel(), symmetric=True,
                                      convention=Convention.TENSORRT, objective=Objective.OUTPUT,
                                      bias_correction=BiasCorrection.SEQUENTIAL, rounding=Rounding.FEEDBACK,
                                      inputs=Inputs.QUANTIZED, target_damp=TARGET_DAMPS, recipe="beyond-tensorrt"),
    "beyond-codebook": QuantizeConfig(space=Space.SQRT, p=0.75, granularity=PerChannel(), symmetric=False,
                                      objective=Objective.OUTPUT, bias_correction=BiasCorrection.SEQUENTIAL,
                                      rounding=Rounding.FEEDBACK, inputs=Inputs.QUANTIZED,
                                      recipe="beyond-codebook"),
    "data-free": QuantizeConfig(space=Space.UNIFORM, granularity=PerChannel(), symmetric=False,
                                objective=Objective.WEIGHT, bias_correction=BiasCorrection.BN,
                                recipe="data-free"),
}

#: Per recipe, the values a field may take without contradicting the recipe's name (anything
#: else raises ValueError naming the recipe and the field).
RECIPE_REQUIRES: dict[str, dict[str, tuple[Any, ...]]] = {
    "beyond-tensorrt": dict(symmetric=(True,), convention=("tensorrt",)),
    "beyond-codebook": dict(space=("sqrt",)),
    "data-free": dict(objective=("weight",), rounding=("nearest",), bias_correction=(None, "bn"), inputs=("float",)),
}


def recipe(name: str) -> QuantizeConfig:
    """The recipe called ``name`` (ValueError listing the names for an unknown one)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: valid values are {sorted(RECIPES)}")
    return RECIPES[name]


def _normalised(key: str, value: Any) -> Any:
    if key == "bias_correction":
        bc = BiasCorrection.parse(value)
        return None if bc is BiasCorrection.NONE else bc.value
    return value.value if isinstance(value, Enum) else value


def check_recipe(name: str | None, values: Mapping[str, Any]) -> None:
    """Raise ValueError if a value of ``values`` (field -> value as written) contradicts recipe ``name``."""
    for key, allowed in RECIPE_REQUIRES.get(name or "", {}).items():
        if key in values and _normalised(key, values[key]) not in allowed:
            raise ValueError(
                f"recipe={name!r} cannot honour {key}={values[key]!r}: it needs {key} in "
                f"{list(allowed)}; drop {key}= to use the recipe, or drop recipe= and pass the "
                "settings yourself"
            )


def make_config(config: QuantizeConfig | str | int | None = None, **options: Any) -> QuantizeConfig:
    """The config of a ``quantize_weights`` call: ``config`` (a config, a recipe name, or the bit
    width), else the recipe named by ``recipe=``, else the defaults; then ``options`` (fields or
    the legacy ``per_channel=``), which always win unless they contradict the recipe.

    Raises:
        ValueError: unknown recipe, a recipe given twice, or a written option the recipe cannot
            honour (naming both).
        TypeError: an unknown option, or the bit width given twice.
    """
    name = options.pop("recipe", None)
    if isinstance(config, QuantizeConfig | str) and name is not None:
        raise ValueError(f"recipe={name!r} given together with config {config!r}: give one of them")
    if isinstance(config, str):
        name, config = config, None
    if config is not None and not isinstance(config, QuantizeConfig):
        if "bits" in options:
            raise TypeError(f"bits given twice: {config!r} and bits={options['bits']!r}")
        options["bits"] = config
    base = config if isinstance(config, QuantizeConfig) else recipe(name) if name else QuantizeConfig()
    check_recipe(base.recipe, translate_legacy(options))
    cfg = base.replace(**options) if options else base
    if cfg.recipe is not None:
        recipe(cfg.recipe)  # a known name
        final = {k: _normalised(k, getattr(cfg, k)) for k in RECIPE_REQUIRES.get(cfg.recipe, {})}
        check_recipe(cfg.recipe, final)
    return cfg


def recipe_fields(cfg: QuantizeConfig) -> dict[str, Any]:
    """The recipe fields of ``cfg`` in the legacy keyword spelling (plain strings,
    ``per_channel`` for the granularity, ``False`` for no bias correction)."""
    out: dict[str, Any] = {}
    for key in RECIPE_FIELDS:
        value = getattr(cfg, key)
        if key == "granularity":
            out["per_channel"] = cfg.per_channel
        elif key == "bias_correction":
            out[key] = False if value is BiasCorrection.NONE else value.value
        else:
            out[key] = value.value if isinstance(value, Enum) else value
    return out
