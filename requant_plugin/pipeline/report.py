"""Write the report folder: ``report.md``, ``results.json`` and three PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

from .. import plots
from .config import PipelineResult
from .tables import accuracy_table, layer_table, setting_line

__all__ = ["REPORT_FILES", "write_report"]

#: Files written into the report folder, in this order (report.md first).
REPORT_FILES = ("report.md", "results.json", "per_layer_mse.png", "alpha_curves.png", "accuracy_vs_bits.png")


def _markdown(result: PipelineResult) -> str:
    cfg = result.config
    lines = [
        f"# REQuant report: {result.model_name} on {result.data_label.split(' ')[0]}",
        "",
        f"Produced by `{cfg.command or 'requant_plugin.pipeline.run_pipeline'}`.",
        "",
        f"- data: {result.data_label}",
        f"- model: {result.model_source}",
        f"- settings: {setting_line(cfg)}",
        f"- weight bit widths: {', '.join(f'W{b}' for b in sorted(cfg.bits, reverse=True))}; "
        f"seed {cfg.seed}",
        *[f"- {note}" for note in result.notes],
        "",
        "## Top-1 accuracy (%)",
        "",
        "min-max: each range is the weight's full range (alpha = 1). REQuant alpha: the range "
        "[alpha*min, alpha*max] minimising the weight MSE. REQuant alpha+sqrt: the same search "
        "on sign(w)*sqrt|w| (a non-uniform grid in w).",
        "",
        accuracy_table(result, markdown=True),
        "",
        "![accuracy vs bits](accuracy_vs_bits.png)",
        "",
        f"## Per-layer results at W{cfg.main_bits} ({cfg.space} grid)",
        "",
        "`MSE gain` is MSE min-max / MSE REQuant; `evals` counts the L(alpha) evaluations of the search.",
        "",
        layer_table(result.layers, markdown=True),
        "",
        "![per-layer MSE](per_layer_mse.png)",
        "",
        f"## L(alpha) at W{cfg.main_bits}",
        "",
        "The exact weight MSE on a dense alpha grid, REQuant's choice (dot) and min-max (square).",
        "",
        "| layer | grid | REQuant alpha | L(REQuant) | min of dense grid | L(min-max) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *[f"| {c.layer} | {c.space} | {c.chosen:.4f} | {c.chosen_loss:.3e} | {c.loss.min():.3e} | "
          f"{c.minmax_loss:.3e} |" for c in result.curves],
        "",
        "![L(alpha) curves](alpha_curves.png)",
        "",
    ]
    if result.export is not None:
        ex = result.export
        lines += [
            "## TensorRT-ready ONNX",
            "",
            f"- file: `{ex.path}` (W{ex.weight_bits}A{ex.act_bits}, symmetric INT8 Q/DQ, "
            "per-channel weights)",
            *[f"- {c}" for c in ex.checks],
            "- TensorRT rules check: " + ("OK" if not ex.violations else f"{len(ex.violations)} finding(s)"),
            *[f"  - {v}" for v in ex.violations],
            "",
            "Export report (per-layer REQuant ranges as written to the ONNX):",
            "",
            "```text", ex.report_text, "```", "",
        ]
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    lines += ["## Timing", "", secs, ""]
    return "\n".join(lines)


def write_report(result: PipelineResult, folder: str | Path) -> list[Path]:
    """Write the report files into ``folder`` (created); returns their paths, report.md first."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    bits = sorted(result.accuracy)
    series = {cfg.label(m): [result.accuracy[b][m] for b in bits] for m in cfg.methods}
    files = [out / "report.md", out / "results.json"]
    files.append(plots.plot_layer_mse(
        [r.name for r in result.layers], [r.mse_minmax for r in result.layers],
        [r.mse_requant for r in result.layers], out / "per_layer_mse.png",
        title=f"{result.model_name}: weight MSE per layer at W{cfg.main_bits} ({cfg.space} grid)"))
    files.append(plots.plot_alpha_curves(result.curves, out / "alpha_curves.png"))
    files.append(plots.plot_accuracy_vs_bits(
        bits, series, result.fp32, out / "accuracy_vs_bits.png",
        title=f"{result.model_name}: top-1 vs weight bits"))
    (out / "results.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    (out / "report.md").write_text(_markdown(result))
    return files
