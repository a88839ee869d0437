"""Mixed precision: measure each layer's output error per bit width, then pick per-layer widths.

:func:`layer_error_curves` measures each layer's relative output error at several bit widths
and :func:`allocate_bits` picks per-layer widths under a model-size budget; pass the result as
``overrides={name: {"bits": b}}`` to :func:`~requant_plugin.quantize_weights`.
"""

from __future__ import annotations

from typing import Any

from .calibration import (
    attention_out_projections,
    collect_statistics,
    supports_output_statistics,
)
from .inputs import calibration_inputs
from .output_search import search_layer_output

__all__ = ["allocate_bits", "layer_error_curves"]


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
    batches = calibration_inputs(calibration_data, model)
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
            sol = search_layer_output(w, g, b, symmetric=symmetric, rounding=rounding, gram_rows=stats[name].gram_count)
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
