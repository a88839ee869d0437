"""Plain-text and markdown tables for the terminal and the report: per-layer, accuracy, settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from ..ptq import weight_counts, width_summary
from .config import LayerRow, PipelineConfig, PipelineResult

__all__ = ["accuracy_table", "format_table", "layer_table", "setting_line", "width_line"]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False,
                 right: Sequence[bool] | None = None) -> str:
    """Align ``rows`` under ``header``; ``right[i]`` right-aligns column ``i`` (numbers).

    ``markdown=True`` gives a GitHub-style pipe table, otherwise two-space separated columns
    with a dashed rule under the header.
    """
    ncol = len(header)
    if any(len(r) != ncol for r in rows):
        raise ValueError("every row needs one cell per header column")
    align = list(right) if right is not None else [False] * ncol
    cells = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(ncol)]

    def fmt(row: Sequence[str]) -> list[str]:
        return [c.rjust(w) if a else c.ljust(w) for c, w, a in zip(row, widths, align, strict=True)]

    if markdown:
        rule = [("-" * max(w - 1, 1) + ":") if a else "-" * w for w, a in zip(widths, align, strict=True)]
        grid: list[list[str]] = [fmt(header), rule, *[fmt(r) for r in rows]]
        return "\n".join("| " + " | ".join(line) + " |" for line in grid)
    lines = ["  ".join(fmt(header)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(fmt(r)).rstrip() for r in rows]
    return "\n".join(lines)


def layer_table(rows: list[LayerRow], *, markdown: bool = False) -> str:
    """Per-layer table: alpha, weight MSE of min-max and REQuant, their ratio, evaluations."""
    body = [
        [r.name, "x".join(map(str, r.shape)), r.space, f"{r.alpha:.4f}", f"{r.mse_minmax:.3e}",
         f"{r.mse_requant:.3e}",
         f"{r.mse_minmax / r.mse_requant:.2f}x" if r.mse_requant > 0 else "-", str(r.evaluations)]
        for r in rows
    ]
    head = ["layer", "shape", "grid", "alpha", "MSE min-max", "MSE REQuant", "MSE gain", "evals"]
    return format_table(head, body, markdown=markdown,
                        right=[False, False, False, True, True, True, True, True])


def accuracy_table(result: PipelineResult, *, markdown: bool = False) -> str:
    """Top-1 accuracy: one row per bit width, one column per method, FP32 first."""
    methods = result.config.methods
    head = ["weights", *[result.config.label(m) for m in methods]]
    rows = [["FP32", *[f"{result.fp32:.2f}"] * len(methods)]]
    for b in sorted(result.accuracy, reverse=True):
        rows.append([f"W{b}", *[f"{result.accuracy[b][m]:.2f}" for m in methods]])
    return format_table(head, rows, markdown=markdown, right=[False] + [True] * len(methods))


def setting_line(cfg: PipelineConfig) -> str:
    """One line describing the quantizer settings."""
    grid = "symmetric" if cfg.symmetric else "asymmetric"
    gran = "per-channel" if cfg.per_channel else "per-tensor"
    acts = (f"activations A{cfg.act_bits} (per-tensor, fake-quant)" if cfg.act_bits
            else "activations FP32 (A32)")
    fold = ", BN folded" if cfg.fold_bn else ""
    ends = "" if cfg.end_bits is None else (
        f"; first and last layers' weights{' and inputs' if cfg.act_bits else ''} at {cfg.end_bits} bits")
    extra = (f"; recipe row: {cfg.recipe!r} (its own grid and granularity) on {cfg.calib_images} train images"
             if cfg.recipe else "")
    if cfg.recipe and cfg.mixed_precision:
        extra += "; mixed row: the recipe with per-layer widths, each --bits width as the mean bits per weight"
    return (f"weights {gran} {grid}{fold}{ends}; first and last layers use the uniform grid "
            f"(no sqrt transform); {acts}{extra}")


def width_line(model: nn.Module, widths: Mapping[str, int]) -> str:
    """Layers per width and the weights' mean bits, e.g. ``2 bits: 3 layers, 4 bits: 17 layers; 3.50 bits per
    weight``."""
    count, mean = width_summary(widths, weight_counts(model, widths))
    parts = ", ".join(f"{b} bits: {k} layer{'s' * (k != 1)}" for b, k in count.items())
    return f"{parts}; {mean:.2f} bits per weight"

