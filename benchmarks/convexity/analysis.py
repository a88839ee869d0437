"""The convexity analysis: the dense curve L(alpha), its significant local minima, the plain and
REQuant golden searches against the dense optimum, and the summary table per bit width."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.harness.data import model_weights
from benchmarks.harness.markdown import DASH, md_table
from benchmarks.harness.runtime import progress
from requant_plugin.core import Grid, golden_search, objective_for_rows
from requant_plugin.core.scalar_search import golden_section

N_GRID = 2000
TOL = 1e-3
SPACES = {"uniform": 1.0, "sqrt": 0.5}
PLOT_LAYERS = {"resnet20": ["conv1", "layer1.0.conv1", "layer3.2.conv2", "linear"]}
#: ModelOpt's multipliers that fall inside (0, 1] (the others only widen the range)
MODELOPT_ALPHAS = np.array([m for m in np.linspace(0.25, 4.0, 39) if m <= 1.0])


def curve(obj: Any) -> tuple[np.ndarray, np.ndarray]:
    alphas = np.arange(1, N_GRID + 1, dtype=np.float64) / N_GRID
    return alphas, obj(alphas[None, :])[0]


def significant_minima(loss: np.ndarray, eps: float) -> int:
    """Local minima (plateaus count once) that need a climb of more than ``eps`` to reach a lower point."""
    n = loss.size
    count = 0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and loss[j + 1] == loss[i]:
            j += 1
        left_up = i == 0 or loss[i - 1] > loss[i]
        right_up = j == n - 1 or loss[j + 1] > loss[i]
        if left_up and right_up:
            v = loss[i]
            barriers = []
            lower_l = np.nonzero(loss[:i] < v)[0]
            if lower_l.size:
                k = lower_l[-1]
                barriers.append(loss[k:i].max() - v)
            lower_r = np.nonzero(loss[j + 1 :] < v)[0]
            if lower_r.size:
                k = j + 1 + lower_r[0]
                barriers.append(loss[j + 1 : k + 1].max() - v)
            if not barriers or min(barriers) > eps:
                count += 1
        i = j + 1
    return count


def plain_golden(obj: Any, lo: float = 0.05, hi: float = 1.0, tol: float = 1e-4) -> tuple[float, float, int]:
    """The paper's golden-section sketch on [lo, hi] (``hi = 1``), then the better of that and
    alpha = hi: the core's scalar :func:`golden_section` on one row's ``L(alpha)``."""
    res = golden_section(lambda a: float(obj(np.array([[a]]))[0, 0]), lo, hi, tol=tol)
    return res.x, res.fx, res.evaluations


def analyse(model: str, layer: str, w: np.ndarray, bits: int, space: str) -> dict[str, Any]:
    rows = w.reshape(1, -1).astype(np.float64)
    obj = objective_for_rows(rows, Grid.from_bits(bits), p=SPACES[space])
    alphas, loss = curve(obj)
    lmin = float(loss.min())
    g = golden_search(objective_for_rows(rows, Grid.from_bits(bits), p=SPACES[space]))
    pa, pl, pe = plain_golden(objective_for_rows(rows, Grid.from_bits(bits), p=SPACES[space]))
    eps = TOL * lmin
    strict = significant_minima(loss, 0.0)
    tolerant = significant_minima(loss, eps)
    return {
        "model": model,
        "layer": layer,
        "bits": bits,
        "space": space,
        "n": int(rows.size),
        "strict_minima": strict,
        "minima_0.1pct": tolerant,
        "grid_alpha": float(alphas[int(np.argmin(loss))]),
        "grid_mse": lmin,
        "golden_alpha": float(g.alpha[0]),
        "golden_mse": float(g.mse[0]),
        "golden_evals": int(g.evaluations),
        "plain_alpha": pa,
        "plain_mse": pl,
        "plain_evals": pe,
    }


def run(models: list[str], bits_list: list[int]) -> list[dict[str, Any]]:
    jobs = [
        (m, layer, w.detach().double().numpy(), b, s)
        for m in models
        for layer, w in model_weights(m)
        for b in bits_list
        for s in SPACES
    ]
    return [analyse(*j) for j in progress(jobs, "convexity")]


def share(xs: list[bool]) -> str:
    return f"{100.0 * sum(xs) / len(xs):.0f} %" if xs else DASH


def table(records: list[dict[str, Any]]) -> str:
    heads = ["bits"]
    for s in SPACES:
        heads += [
            f"{s}: strictly unimodal",
            f"{s}: unimodal to 0.1 %",
            f"{s}: plain GSS ok",
            f"{s}: REQuant ok",
        ]
    rows = []
    for b in sorted({r["bits"] for r in records}):
        row = [f"W{b}"]
        for s in SPACES:
            rs = [r for r in records if r["bits"] == b and r["space"] == s]
            row += [
                share([r["strict_minima"] == 1 for r in rs]),
                share([r["minima_0.1pct"] <= 1 for r in rs]),
                share([r["plain_mse"] <= r["grid_mse"] * (1 + TOL) for r in rs]),
                share([r["golden_mse"] <= r["grid_mse"] * (1 + TOL) for r in rs]),
            ]
        rows.append(row)
    return md_table(heads, rows)
