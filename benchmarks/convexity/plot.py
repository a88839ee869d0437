"""The convexity figures: L(alpha) for a few layers with the point where each search stopped, and
the unimodal share per bit width."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.convexity.analysis import MODELOPT_ALPHAS, PLOT_LAYERS, SPACES, curve, plain_golden
from benchmarks.harness.data import model_weights
from requant_plugin.core import Grid, golden_search, objective_for_rows


def plot(models: list[str], bits: int, path: Path) -> None:
    """L(alpha) for a few layers (rows: uniform, sqrt), with every search's stopping point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [(m, name, w) for m in models for name, w in model_weights(m) if name in PLOT_LAYERS.get(m, [])]
    fig, axes = plt.subplots(2, len(layers), figsize=(4.2 * len(layers), 7), squeeze=False)
    for col, (m, name, w) in enumerate(layers):
        rows = w.detach().double().numpy().reshape(1, -1)
        for r, space in enumerate(SPACES):
            ax = axes[r][col]

            def obj_(rows: np.ndarray = rows, space: str = space) -> Any:
                return objective_for_rows(rows, Grid.from_bits(bits), p=SPACES[space])

            obj = obj_()
            alphas, loss = curve(obj)
            ax.plot(alphas, loss, lw=0.8, color="0.3", label="L(alpha), 2000 pts")
            marks = {
                "dense optimum": (alphas[int(np.argmin(loss))], float(loss.min()), "k", "*", 14),
            }
            g = golden_search(obj_())
            marks["REQuant search"] = (float(g.alpha[0]), float(g.mse[0]), "tab:red", "o", 9)
            pa, pl, _ = plain_golden(obj_())
            marks["plain golden section"] = (pa, pl, "tab:orange", "v", 9)
            for label, cand, color, mk in (
                ("100-pt grid (torchao-style)", np.arange(1, 101) / 100, "tab:blue", "s"),
                ("39 multipliers <= 1 (ModelOpt-style)", MODELOPT_ALPHAS, "tab:green", "D"),
                ("20-pt grid (Brevitas-style)", np.arange(1, 21) / 20, "tab:purple", "^"),
            ):
                lv = obj_()(cand[None, :])[0]
                k = int(np.argmin(lv))
                marks[label] = (float(cand[k]), float(lv[k]), color, mk, 7)
            for label, (a, v, color, mk, size) in marks.items():
                ax.plot([a], [v], marker=mk, color=color, ms=size, ls="none", label=label, alpha=0.85)
            lo = float(loss.min())
            ax.set_ylim(lo * 0.98, min(float(loss.max()), lo * 1.8))
            ax.set_xlim(max(0.0, alphas[int(np.argmin(loss))] - 0.3), 1.0)
            ax.set_title(f"{m} {name} ({rows.size} w)\nW{bits} {space}", fontsize=9)
            ax.set_xlabel("alpha")
            if col == 0:
                ax.set_ylabel("weight MSE")
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_share(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bits = sorted({r["bits"] for r in records})
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.2
    for i, (s, key, label) in enumerate(
        [
            ("uniform", "strict_minima", "uniform, strict"),
            ("uniform", "minima_0.1pct", "uniform, to 0.1 %"),
            ("sqrt", "strict_minima", "sqrt, strict"),
            ("sqrt", "minima_0.1pct", "sqrt, to 0.1 %"),
        ]
    ):
        vals = []
        for b in bits:
            rs = [r for r in records if r["bits"] == b and r["space"] == s]
            vals.append(100.0 * np.mean([r[key] <= 1 for r in rs]) if rs else 0.0)
        ax.bar(np.arange(len(bits)) + (i - 1.5) * width, vals, width, label=label)
    ax.set_xticks(np.arange(len(bits)), [f"W{b}" for b in bits])
    ax.set_ylabel("layers with unimodal L(alpha) (%)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
