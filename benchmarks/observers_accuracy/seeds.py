"""FX W8A8 over several calibration seeds: the per-seed table with paired differences
(section ``accuracy-fx-seeds``) and its figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.paths import IMG

FX_VARIANTS = (("default", "torch default"), ("requant", "REQuant"), ("requant_exact", "REQuant, exact histograms"),
               ("requant_refined", "REQuant + refined act. ranges"), ("requant_mse", "rho = 0"),
               ("requant_w_minmax", "acts + min-max weights"), ("requant_w_sqrt", "sqrt-space weights"))


def _sd(v: np.ndarray) -> float:
    """Sample standard deviation (0 for a single value)."""
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def _paired(a: np.ndarray, b: np.ndarray) -> str:
    """``a - b`` over paired samples: mean, SD, standard error of the mean, and how often ``a >= b``."""
    d = a - b
    return (f"{d.mean():+.3f} points on average (SD {_sd(d):.3f}, standard error {_sd(d) / np.sqrt(len(d)):.3f}); "
            f"at or above on {int(np.sum(d >= 0))} of {len(d)} samples")


def seeds_markdown(runs: dict[int, dict[str, dict[str, Any]]], cmd: str) -> str:
    """FX W8A8 over several calibration samples: per seed and model the accuracy of every
    configuration, then per model the mean (SD over seeds) and the paired difference
    REQuant - default (mean, SD, standard error of the mean, seeds with REQuant >= default)."""
    seeds = sorted(runs)
    names = list(runs[seeds[0]])
    first = runs[seeds[0]]
    images = ", ".join(sorted({f"{first[n]['test_images']:,}" for n in names if "test_images" in first[n]}))
    lines = [f"Command: `{cmd}` (calibration seeds {', '.join(map(str, seeds))}, each the same for every "
             f"configuration of that seed; test images per model: {images or 'n/a'})", "",
             "| model | seed | FP32 | " + " | ".join(label for _, label in FX_VARIANTS) + " | REQuant - default |",
             "| :--- | :--- | ---: | " + " | ".join("---:" for _ in FX_VARIANTS) + " | ---: |"]
    summary = []
    for name in names:
        acc = {key: np.array([runs[s][name][f"fx_w8a8_{key}"]["acc"] for s in seeds]) for key, _ in FX_VARIANTS}
        fp32 = runs[seeds[0]][name]["fp32"]
        for i, seed in enumerate(seeds):
            diff = acc["requant"][i] - acc["default"][i]
            lines.append(f"| {name} | {seed} | {fp32:.2f} | " + " | ".join(
                f"{'**' if key == 'requant' else ''}{acc[key][i]:.2f}{'**' if key == 'requant' else ''}"
                for key, _ in FX_VARIANTS) + f" | {diff:+.2f} |")
        d = acc["requant"] - acc["default"]
        lines.append(f"| {name} | mean (SD) | {fp32:.2f} | " + " | ".join(
            f"{acc[key].mean():.2f} ({_sd(acc[key]):.2f})" for key, _ in FX_VARIANTS)
            + f" | {d.mean():+.2f} ({_sd(d):.2f}) |")
        summary.append(f"{name}: REQuant - default {_paired(acc['requant'], acc['default'])}; REQuant - FP32 "
                       f"{acc['requant'].mean() - fp32:+.2f} on average (worst {acc['requant'].min() - fp32:+.2f})")
        summary.append(f"{name}: exact histograms (`act_sample_size=None`) - default "
                       f"{_paired(acc['requant_exact'], acc['default'])}")
        summary.append(f"{name}: REQuant + refined activation ranges (`refine_activation_ranges`) - default "
                       f"{_paired(acc['requant_refined'], acc['default'])}")
    return "\n".join(lines + [""] + [f"- {line}" for line in summary])


SEEDS_PNG = IMG / "observers_w8a8_seeds.png"


def plot_seeds(runs: dict[int, dict[str, dict[str, Any]]], path: Path = SEEDS_PNG) -> Path:
    """FX W8A8 top-1 per calibration seed (dots) and mean (bar) for torch's default, REQuant,
    REQuant with exact histograms and with refined activation ranges, one panel per model, FP32
    as a dashed line."""
    from requant_plugin.plots import new_figure, save_figure

    seeds = sorted(runs)
    names = list(runs[seeds[0]])
    keys = (("default", "torch default"), ("requant", "REQuant"), ("requant_exact", "REQuant,\nexact hist."),
            ("requant_refined", "REQuant,\nrefined ranges"))
    fig = new_figure(5.2 * len(names), 3.4)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        for j, (key, _label) in enumerate(keys):
            acc = np.array([runs[s][name][f"fx_w8a8_{key}"]["acc"] for s in seeds])
            ax.scatter(np.full(len(acc), j) + np.linspace(-0.15, 0.15, len(acc)), acc, s=14, zorder=3)
            ax.hlines(acc.mean(), j - 0.3, j + 0.3, colors="k", linewidth=2, zorder=4)
            ax.text(j + 0.32, acc.mean(), f"{acc.mean():.2f}", va="center", fontsize=8)
        ax.axhline(runs[seeds[0]][name]["fp32"], color="gray", linestyle="--", linewidth=1, label="FP32")
        ax.set_xticks(range(len(keys)), [label for _, label in keys], fontsize=8)
        ax.set_xlim(-0.5, len(keys) - 0.2)
        ax.margins(y=0.12)
        ax.set_title(f"{name}: FX W8A8, {len(seeds)} calibration seeds", fontsize=9)
        ax.set_ylabel("top-1 % (10,000 test images)" if i == 0 else "")
        ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)
