"""The accuracy-vs-size figure of docs/results-beyond.md (``docs/img/beyond_accuracy_vs_size.png``)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.beyond_paper.findings import Res
from benchmarks.beyond_paper.measure import sweep_fp32_kib
from benchmarks.beyond_paper.rows import GOAL_W3, GOAL_W4, SWEEP


def plot(path: Path, sweep: Res, models: list[str], fp32: dict[str, float], mixed: Res | None = None) -> None:
    """Top-1 against storage (KiB, log) per model: the sweep rows, mixed precision, FP32 and the goals."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover
        raise ImportError("the plot needs matplotlib: pip install 'requant-plugin[plots]'") from exc
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        for key, (label, _) in SWEEP.items():
            pts = sorted((r["size_bits"] / 8192, r["acc"], b)
                         for (k, mm, b), r in sweep.items() if k == key and mm == m)
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
            if key == "beyond":
                for x, y, b in pts:
                    ax.annotate(f"W{b}", (x, y), textcoords="offset points", xytext=(-4, 6), fontsize=8)
        for sens, style in (("layer", "x"), ("network", "*")):
            mp = sorted((r["size_bits"] / 8192, r["acc"]) for (k, mm, _), r in (mixed or {}).items()
                        if mm == m and k == f"mixed-{sens}")
            if mp:
                ax.plot([p[0] for p in mp], [p[1] for p in mp], f"k{style}", ms=9,
                        label=f"beyond, mixed precision ({sens} sensitivity)")
        ax.axhline(fp32[m], color="k", ls="--", lw=1, label=f"FP32 {fp32[m]:.2f} ({sweep_fp32_kib(m):.0f} KiB)")
        ax.axhline(fp32[m] - GOAL_W4, color="g", ls=":", lw=1, label="FP32 - 0.3")
        ax.axhline(fp32[m] - GOAL_W3, color="r", ls=":", lw=1, label="FP32 - 1.5")
        ax.set_xscale("log")
        ax.set_xlabel("model size (KiB, log scale)")
        ax.set_ylabel("top-1 (%)")
        ax.set_ylim(fp32[m] - 8.0, fp32[m] + 1.0)
        ax.set_title(f"{m}: accuracy vs size (weights only; lower points off the chart)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
