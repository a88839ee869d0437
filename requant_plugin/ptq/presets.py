"""Named recipes for :func:`requant_plugin.quantize_weights` (``recipe="beyond"`` etc.).

A recipe fills the keywords the caller left at their default values; anything passed
explicitly with a non-default value wins. Measured on the shared CIFAR-10 ResNets in
``docs/results-beyond.md`` (``benchmarks/beyond_paper.py``):

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

__all__ = ["DEFAULTS", "PRESETS", "allocate_bits", "apply_recipe", "layer_error_curves", "quantize_beyond"]

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


def apply_recipe(recipe: str, current: dict[str, Any]) -> dict[str, Any]:
    """``current`` keywords with the recipe's values for those still at their defaults."""
    if recipe not in PRESETS:
        raise ValueError(f"unknown recipe {recipe!r}: valid values are {sorted(PRESETS)}")
    out = dict(current)
    for key, value in PRESETS[recipe].items():
        if key not in out or _same(out[key], DEFAULTS[key]):
            out[key] = value
    return out


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


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
    """Relative output error of every Linear/Conv1d/Conv2d layer at each candidate bit width.

    ``e_l(b) = mean_c e_c^T G e_c / mean_c w_c^T G w_c``: the output MSE of the ``"beyond"``
    solution (per-channel uniform ranges, output objective, ``rounding``) divided by the
    layer's mean squared float output (bias excluded), from one pass of calibration data.
    """
    from .calibration import collect_statistics, iter_calibration_inputs, supports_output_statistics
    from .output_search import search_layer_output

    batches = list(iter_calibration_inputs(calibration_data))
    if not batches:
        raise ValueError("calibration_data yielded no batch")
    names = [n for n, m in model.named_modules() if supports_output_statistics(m)]
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
