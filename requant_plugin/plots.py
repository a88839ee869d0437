"""PNG plots of a quantization run (matplotlib, imported lazily, Agg canvas, no pyplot state).

* :func:`plot_layer_mse`: weight MSE per layer, min-max vs REQuant (log scale).
* :func:`plot_alpha_curves`: ``L(alpha)`` of a few layers with REQuant's alpha and min-max
  (``alpha = 1``) marked.
* :func:`plot_accuracy_vs_bits`: top-1 accuracy per bit width and method, FP32 as a line.

Each function writes one PNG and returns its path. Without matplotlib they raise
:class:`requant_plugin.deps.MissingDependency` (an ``ImportError``) naming the extra to install:
``pip install 'requant-plugin[plots]'``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .deps import require

if TYPE_CHECKING:
    from .pipeline.curves import AlphaCurve

__all__ = ["new_figure", "plot_accuracy_vs_bits", "plot_alpha_curves", "plot_layer_mse", "save_figure"]

def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` bound to an Agg canvas (never touches pyplot's global state)."""
    figure = require("matplotlib.figure", "plots")
    backend = require("matplotlib.backends.backend_agg", "plots")
    fig = figure.Figure(figsize=(width, height), dpi=110)
    backend.FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Tight layout and write a PNG, creating the folder."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out


def plot_layer_mse(
    names: Sequence[str], mse_minmax: Sequence[float], mse_requant: Sequence[float],
    path: str | Path, *, title: str = "Weight MSE per layer",
) -> Path:
    """Weight MSE per layer (log y): min-max (grey squares) vs REQuant (blue dots), in layer order."""
    n = len(names)
    fig = new_figure(max(5.0, 0.32 * n + 2.0), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(n))
    for x, a, b in zip(xs, mse_minmax, mse_requant, strict=True):
        ax.plot([x, x], [a, b], color="#cccccc", lw=1.0, zorder=1)
    ax.plot(xs, mse_minmax, "s", color="#777777", label="min-max (alpha = 1)", zorder=2)
    ax.plot(xs, mse_requant, "o", color="#1f77b4", label="REQuant", zorder=3)
    if min([*mse_minmax, *mse_requant, 1.0]) > 0:
        ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("mean squared weight error")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_alpha_curves(curves: Sequence[AlphaCurve], path: str | Path) -> Path:
    """One panel per layer: ``L(alpha)`` (log y), REQuant's alpha (dot) and min-max (square)."""
    n = max(1, len(curves))
    cols = min(n, 2)
    rows = -(-n // cols)
    fig = new_figure(4.2 * cols, 3.0 * rows)
    for i, c in enumerate(curves):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(c.alphas, c.loss, color="#1f77b4", lw=1.2, label="L(alpha)")
        ax.plot([c.chosen], [c.chosen_loss], "o", color="#d62728",
                label=f"REQuant alpha = {c.chosen:.3f}")
        ax.plot([1.0], [c.minmax_loss], "s", color="#555555", label="min-max (alpha = 1)")
        positive = c.loss[c.loss > 0]
        if positive.size:
            ax.set_yscale("log")
        where = "" if c.channel is None else f", channel {c.channel}"
        ax.set_title(f"{c.layer} (W{c.bits}, {c.space}{where})", fontsize=9)
        ax.set_xlabel("alpha (range scale)")
        ax.set_ylabel("weight MSE")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_accuracy_vs_bits(
    bits: Sequence[int], series: Mapping[str, Sequence[float]], fp32: float, path: str | Path,
    *, title: str = "Top-1 accuracy vs weight bits",
) -> Path:
    """Accuracy per method against the bit width, with the FP32 accuracy as a dashed line."""
    fig = new_figure(5.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    order = sorted(range(len(bits)), key=lambda i: bits[i])
    xs = [bits[i] for i in order]
    markers = ["s", "o", "^", "D", "v"]
    for k, (label, values) in enumerate(series.items()):
        ax.plot(xs, [values[i] for i in order], marker=markers[k % len(markers)], label=label)
    ax.axhline(fp32, ls="--", color="black", lw=1, label=f"FP32 {fp32:.2f}%")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"W{b}" for b in xs])
    ax.set_xlabel("weight bit width")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
