"""Mixed precision: measure each layer's error per bit width, then pick per-layer widths.

:func:`layer_error_curves` measures each layer's error at several bit widths, by default as its
estimated share of the network output's KL divergence (the output MSE of each channel weighted by
the Fisher information at that channel, :mod:`.sensitivity`); :func:`allocate_bits` picks per-layer
widths under a model-size budget; :func:`mixed_precision_bits` does both. Pass the result as
``overrides={name: {"bits": b}}`` to :func:`~requant_plugin.quantize_weights`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..options import Sensitivity
from .calibration import (
    attention_out_projections,
    collect_statistics,
    supports_output_statistics,
    unreached_layers,
)
from .inputs import calibration_inputs
from .output_search import search_layer_output
from .plan import layer_weight
from .sensitivity import output_fisher

__all__ = ["allocate_bits", "layer_error_curves", "mixed_precision_bits", "weight_counts", "width_summary"]

#: the widths :func:`mixed_precision_bits` chooses from
CANDIDATES = (2, 3, 4, 5, 6, 8)
#: the curves' rounding and Gram rows unless :func:`layer_error_curves` is told otherwise
ROUNDING, CALIBRATION_ROWS = "feedback", 8192


def layer_error_curves(
    model: Any, calibration_data: Any, candidates: tuple[int, ...] = CANDIDATES, *,
    symmetric: bool = False, rounding: str = ROUNDING, calibration_rows: int = CALIBRATION_ROWS, seed: int = 0,
    sensitivity: str | Sensitivity = Sensitivity.NETWORK,
) -> dict[str, dict[int, float]]:
    """Error of every Linear/Conv1d/Conv2d layer at each candidate bit width, that layer alone
    quantized with the ``"beyond"`` solution (per-channel uniform ranges, output objective,
    ``rounding``; ``MultiheadAttention.out_proj`` excluded: its forward never runs, so it sees no data).

    ``sensitivity="network"``: ``e_l(b) = 1/2 sum_c F_c e_c^T G e_c``, the network's ``KL(p_float || p_quant)``
    to second order (``F_c``: :func:`~requant_plugin.ptq.sensitivity.output_fisher`), comparable across layers;
    ``"layer"``: ``e_l(b) = mean_c e_c^T G e_c / mean_c w_c^T G w_c``, the layer's relative output MSE.
    """
    return _curves(model, calibration_data, candidates, symmetric=symmetric, rounding=rounding,
                   calibration_rows=calibration_rows, seed=seed, measure=Sensitivity.parse(sensitivity), progress=False)


def _curves(model: Any, calibration_data: Any, candidates: tuple[int, ...], *, symmetric: bool, rounding: str,
            calibration_rows: int, seed: int, measure: Sensitivity, progress: bool) -> dict[str, dict[int, float]]:
    """:func:`layer_error_curves`, with a tqdm bar over the layers when ``progress``."""
    from tqdm.auto import tqdm  # a dependency; imported on first use only

    batches = calibration_inputs(calibration_data, model)
    unhooked = attention_out_projections(model)  # no input statistics: MHA reads out_proj.weight
    names = [n for n, m in model.named_modules() if supports_output_statistics(m) and n not in unhooked]
    unreached = unreached_layers(model, batches[0][:1], names)
    if unreached:
        warnings.warn(f"layer_error_curves: {sorted(unreached)} are not called by the model's eval-mode forward (e.g. "
                      "a training-only auxiliary head): left out of the curves, so quantize_weights gives them the "
                      "config's width", stacklevel=3)
        names = [n for n in names if n not in unreached]
    stats = collect_statistics(model, batches, names, max_rows=-(-calibration_rows // len(batches)), seed=seed)
    fisher = output_fisher(model, batches, names, seed=seed) if measure is Sensitivity.NETWORK else {}
    curves: dict[str, dict[int, float]] = {}
    for name in tqdm(names, desc="mixed precision", unit="layer", disable=not progress):
        w = model.get_submodule(name).weight
        g = stats[name].gram
        scale = _layer_energy(w, g) if measure is Sensitivity.LAYER else 0.0
        curves[name] = {}
        for b in candidates:
            sol = search_layer_output(w, g, b, symmetric=symmetric, rounding=rounding, gram_rows=stats[name].gram_count)
            if measure is Sensitivity.NETWORK:
                curves[name][b] = 0.5 * float(np.dot(fisher[name], sol.channel_output_mse))
            else:
                curves[name][b] = sol.output_mse / scale if scale > 0 else 0.0
    return curves


def mixed_precision_bits(
    model: Any, calibration_data: Any, budget_bits: float, candidates: tuple[int, ...] = CANDIDATES, *,
    sensitivity: str | Sensitivity = Sensitivity.NETWORK, seed: int = 0, progress: bool = False,
    symmetric: bool = False,
) -> dict[str, int]:
    """Per-layer widths with at most ``budget_bits`` bits per weight on average (weights of every layer
    :func:`layer_error_curves` measures), minimising the summed errors: the two functions in one call
    (``symmetric``: the curves on the symmetric grid, for a symmetric recipe such as ``beyond-tensorrt``)."""
    curves = _curves(model, calibration_data, candidates, symmetric=symmetric, rounding=ROUNDING,
                     calibration_rows=CALIBRATION_ROWS, seed=seed, measure=Sensitivity.parse(sensitivity),
                     progress=progress)
    return allocate_bits(curves, weight_counts(model, curves), budget_bits)


def _layer_energy(w: Any, g: np.ndarray) -> float:
    """``mean_c w_c^T G w_c``: the layer's mean squared float output (bias excluded)."""
    w2 = w.detach().double().reshape(w.shape[0], -1).cpu().numpy()
    gg = g if g.ndim == 3 else g[None]
    per = w2.shape[0] // gg.shape[0]
    return sum(float((w2[i * per:(i + 1) * per] @ gg[i] * w2[i * per:(i + 1) * per]).sum())
               for i in range(gg.shape[0])) / w2.shape[0]


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


def width_summary(bits: Mapping[str, int], sizes: Mapping[str, int]) -> tuple[dict[int, int], float]:
    """How many layers take each width (``{2: 5, ...}``, narrowest first) and the bits per weight on average,
    ``sum_l n_l b_l / sum_l n_l``."""
    hist = dict(sorted(Counter(bits.values()).items()))
    total = sum(sizes[n] for n in bits)
    return hist, sum(sizes[n] * b for n, b in bits.items()) / total if total else 0.0


def weight_counts(model: Any, names: Iterable[str]) -> dict[str, int]:
    """``{name: number of weights}`` of the named layers (the ``sizes`` of :func:`allocate_bits`)."""
    return {n: int(layer_weight(model.get_submodule(n)).numel()) for n in names}
