"""The figures of docs/results-peers.md (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.results_peers.methods import BY_KEY, Res, SeedCell


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    return plt


def _save(plt: Any, fig: Any, path: Path) -> bool:
    """Write ``fig`` to ``path`` (folders made) and close it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot(path: Path, res: Res, fp32: dict[str, float], models: list[str], keys: list[str],
         settings: list[str]) -> bool:
    """Top-1 against calibration seconds (log) per model, one marker per method, W-bits annotated."""
    plt = _pyplot()
    if plt is None:  # pragma: no cover
        return False
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.6), squeeze=False)
    markers = "os^vD<>pXh*"
    for ax, m in zip(axes[0], models, strict=True):
        for i, k in enumerate(keys):
            pts = [(res[(m, k, s)]["seconds"], res[(m, k, s)]["acc"], s) for s in settings
                   if "acc" in res.get((m, k, s), {})]
            if not pts:
                continue
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=markers[i % len(markers)], s=36,
                       label=BY_KEY[k].label[:40])
            for x, y, s in pts:
                ax.annotate(s, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        if m in fp32:
            ax.axhline(fp32[m], color="k", ls="--", lw=1, label=f"FP32 {fp32[m]:.2f}")
        ax.set_xscale("log")
        ax.set_xlabel("calibration wall time (s, log scale)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(m)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return _save(plt, fig, path)


def plot_peer_seeds(path: Path, cells: list[SeedCell], fp32: dict[str, float]) -> bool:
    """One line per ``(model, peer, setting, [(peer, REQuant) top-1 per seed])`` cell: each seed's top-1 minus
    FP32 for the peer (x) and REQuant (o), the means as bars."""
    plt = _pyplot()
    cells = [c for c in cells if c[0] in fp32]
    if plt is None or not cells:
        return False
    fig, ax = plt.subplots(figsize=(8.5, 0.55 * len(cells) + 1.4))
    for y, (m, _, _, pairs) in enumerate(cells):
        for col, (marker, colour) in enumerate((("x", "tab:red"), ("o", "tab:blue"))):
            vals = [v - fp32[m] for v in (p[col] for p in pairs) if v is not None]
            row = y + (0.12 if col else -0.12)
            ax.scatter(vals, [row] * len(vals), marker=marker, color=colour, s=30,
                       label=("peer" if col == 0 else "REQuant") if y == 0 else None)
            ax.plot([sum(vals) / len(vals)] * 2, [row - 0.2, row + 0.2], color=colour, lw=2)
    ax.set_yticks(range(len(cells)), [f"{m} {s}: {BY_KEY[k].label.split(' +')[0]}" for m, k, s, _ in cells], fontsize=8)
    ax.axvline(0, color="k", ls="--", lw=1)
    ax.set_xlabel("top-1 - FP32 (points), per calibration seed")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    return _save(plt, fig, path)
