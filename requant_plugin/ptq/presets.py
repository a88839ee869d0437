"""Named recipes for :func:`requant_plugin.quantize_weights` (``recipe="beyond"`` etc.).

A recipe fills the keywords the caller did not write; any keyword the caller wrote wins (even
when its value equals the default), and one that contradicts what the recipe is named for
(:data:`RECIPE_REQUIRES`, e.g. ``recipe="beyond-tensorrt", symmetric=False``) raises.
Measured on the shared CIFAR-10 ResNets in ``docs/results-beyond.md`` (``benchmarks/beyond_paper.py``):

* ``"paper"``: the paper's setting, per-tensor asymmetric alpha on ``sign(w)|w|^0.5`` (first
  and last layers uniform), weight MSE, no data.
* ``"paper+"``: the paper's grid with the output objective and bias correction (data).
* ``"beyond"``: the recommended mode: per-channel asymmetric UNIFORM ranges (integer zero
  points, expressible by the observers, pt2e and ONNX Q/DQ), output objective, error-feedback
  rounding on that grid, plain bias correction (data).
* ``"beyond-tensorrt"``: ``"beyond"`` on the symmetric TensorRT grid (zero point 0).
* ``"beyond-codebook"``: ``"beyond"`` on the transform grid with ``p = 0.75`` per channel
  (non-uniform codebook; storage / fake-quant only).
* ``"data-free"``: per-channel uniform weight-MSE alpha with bias correction from the
  BatchNorm statistics (needs ``input_shape``, no data).

Mixed precision: :func:`layer_error_curves` measures each layer's relative output error at
several bit widths and :func:`allocate_bits` picks per-layer widths under a model-size budget;
pass the result as ``overrides={name: {"bits": b}}``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULTS", "PRESETS", "RECIPE_REQUIRES", "UNSET", "allocate_bits", "apply_recipe", "layer_error_curves",
    "quantize_beyond",
]


class _Unset:
    """The default of a recipe-settable keyword: "not written by the caller"."""

    def __repr__(self) -> str:
        return "<default>"


#: Sentinel default of ``quantize_weights``'s recipe-settable keywords (see :func:`apply_recipe`).
UNSET: Any = _Unset()

#: ``quantize_weights``'s defaults for the keywords a recipe may set.
DEFAULTS: dict[str, Any] = dict(
    space="sqrt", symmetric=False, per_channel=False, fold_bn=False, search="golden", p=0.5,
    objective="weight", bias_correction=False, rounding="nearest", transform_first_last=False,
    convention="torch",
)

PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(space="sqrt", p=0.5, per_channel=False, symmetric=False, objective="weight"),
    "paper+": dict(space="sqrt", p=0.5, per_channel=False, symmetric=False, objective="output",
                   bias_correction="plain"),
    "beyond": dict(space="uniform", per_channel=True, symmetric=False, objective="output",
                   bias_correction="plain", rounding="feedback"),
    "beyond-tensorrt": dict(space="uniform", per_channel=True, symmetric=True, convention="tensorrt",
                            objective="output", bias_correction="plain", rounding="feedback"),
    "beyond-codebook": dict(space="sqrt", p=0.75, per_channel=True, symmetric=False,
                            objective="output", bias_correction="plain", rounding="feedback"),
    "data-free": dict(space="uniform", per_channel=True, symmetric=False, objective="weight",
                      bias_correction="bn"),
}


#: Per recipe, the values a written keyword may take without contradicting the recipe's name
#: (anything else raises ValueError naming the recipe and the keyword).
RECIPE_REQUIRES: dict[str, dict[str, tuple[Any, ...]]] = {
    "beyond-tensorrt": dict(symmetric=(True,), convention=("tensorrt",)),
    "beyond-codebook": dict(space=("sqrt",)),
    "data-free": dict(objective=("weight",), rounding=("nearest",), bias_correction=(None, "bn")),
}


def apply_recipe(recipe: str | None, current: dict[str, Any]) -> dict[str, Any]:
    """Every keyword of :data:`DEFAULTS`: ``current``'s value where the caller wrote it (absent or
    :data:`UNSET`: not written), else the recipe's, else the default.

    Raises:
        ValueError: unknown recipe, or a written keyword the recipe cannot honour
            (:data:`RECIPE_REQUIRES`), naming both.
    """
    if recipe is not None and recipe not in PRESETS:
        raise ValueError(f"unknown recipe {recipe!r}: valid values are {sorted(PRESETS)}")
    written = {k: v for k, v in current.items() if v is not UNSET}
    if recipe is not None:
        for key, allowed in RECIPE_REQUIRES.get(recipe, {}).items():
            if key in written and _normalised(key, written[key]) not in allowed:
                raise ValueError(
                    f"recipe={recipe!r} cannot honour {key}={written[key]!r}: it needs {key} in "
                    f"{list(allowed)}; drop {key}= to use the recipe, or drop recipe= and pass the "
                    "settings yourself"
                )
    preset = PRESETS[recipe] if recipe is not None else {}
    return {key: written.get(key, preset.get(key, default)) for key, default in DEFAULTS.items()}


def _normalised(key: str, value: Any) -> Any:
    if key == "bias_correction":
        from .bias_correction import check_bias_correction

        return check_bias_correction(value)
    return value


def quantize_beyond(model: Any, bits: int = 4, calibration_data: Any = None, **kwargs: Any) -> Any:
    """``quantize_weights(model, bits, recipe="beyond", calibration_data=...)``; returns
    ``(model, report)``. Extra keywords go to :func:`~requant_plugin.quantize_weights`."""
    from .weights import quantize_weights

    kwargs.setdefault("recipe", "beyond")
    return quantize_weights(model, bits, calibration_data=calibration_data, **kwargs)


def layer_error_curves(
    model: Any, calibration_data: Any, candidates: tuple[int, ...] = (2, 3, 4, 5, 6, 8), *,
    symmetric: bool = False, rounding: str = "feedback", calibration_rows: int = 8192, seed: int = 0,
) -> dict[str, dict[int, float]]:
    """Relative output error of every Linear/Conv1d/Conv2d layer at each candidate bit width
    (``MultiheadAttention.out_proj`` excluded: its forward never runs, so it sees no data).

    ``e_l(b) = mean_c e_c^T G e_c / mean_c w_c^T G w_c``: the output MSE of the ``"beyond"``
    solution (per-channel uniform ranges, output objective, ``rounding``) divided by the
    layer's mean squared float output (bias excluded), from one pass of calibration data.
    """
    from .calibration import (
        attention_out_projections,
        check_calibration_batches,
        collect_statistics,
        iter_calibration_inputs,
        supports_output_statistics,
    )
    from .output_search import search_layer_output

    batches = list(iter_calibration_inputs(calibration_data))
    if not batches:
        raise ValueError("calibration_data yielded no batch")
    check_calibration_batches(batches)
    unhooked = attention_out_projections(model)  # no input statistics: MHA reads out_proj.weight
    names = [n for n, m in model.named_modules() if supports_output_statistics(m) and n not in unhooked]
    stats = collect_statistics(model, batches, names, max_rows=-(-calibration_rows // len(batches)), seed=seed)
    curves: dict[str, dict[int, float]] = {}
    for name in names:
        w = model.get_submodule(name).weight
        g = stats[name].gram
        w2 = w.detach().double().reshape(w.shape[0], -1).cpu().numpy()
        gg = g if g.ndim == 3 else g[None]
        per = w2.shape[0] // gg.shape[0]
        energy = sum(float((w2[i * per:(i + 1) * per] @ gg[i] * w2[i * per:(i + 1) * per]).sum())
                     for i in range(gg.shape[0])) / w2.shape[0]
        curves[name] = {}
        for b in candidates:
            sol = search_layer_output(w, g, b, symmetric=symmetric, rounding=rounding)
            curves[name][b] = sol.output_mse / energy if energy > 0 else 0.0
    return curves


def allocate_bits(
    curves: dict[str, dict[int, float]], sizes: dict[str, int], budget_bits: float,
) -> dict[str, int]:
    """Per-layer bit widths with ``sum_l n_l b_l <= budget_bits * sum_l n_l`` (``n_l``: weights
    of layer ``l``) minimising ``sum_l e_l(b_l)``, greedily: every layer starts at its lowest
    candidate and the upgrade with the largest error drop per added bit is taken while it fits.
    """
    total = sum(sizes[n] for n in curves)
    bits = {n: min(c) for n, c in curves.items()}
    used = sum(sizes[n] * bits[n] for n in curves)
    limit = budget_bits * total
    if used > limit + 1e-9:
        raise ValueError(f"budget {budget_bits} bits/weight is below the smallest candidate widths")
    while True:
        best: tuple[float, str, int] | None = None
        for n, c in curves.items():
            higher = sorted(b for b in c if b > bits[n])
            for b in higher:  # any higher candidate (not only the next one): convex-hull safe
                cost = sizes[n] * (b - bits[n])
                if used + cost > limit + 1e-9:
                    continue
                gain = (c[bits[n]] - c[b]) / cost
                if gain > 0 and (best is None or gain > best[0]):
                    best = (gain, n, b)
        if best is None:
            return bits
        _, n, b = best
        used += sizes[n] * (b - bits[n])
        bits[n] = b
