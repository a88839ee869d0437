"""The generated search-cost tables (docs/results.md) and the issue-3 speed section
(docs/core-results.md)."""

from __future__ import annotations

from benchmarks.harness.markdown import DASH, md_table
from benchmarks.harness.runtime import environment
from benchmarks.search_cost.measure import Summary
from benchmarks.search_cost.methods import METHODS, SETS


def tables(summary: Summary, cmd: str, repeats: int) -> str:
    """The search-cost section: one table per weight set and bit width."""
    lines = [
        "## Search cost: REQuant vs the grids",
        "",
        f"Command: `{cmd}`. Per-tensor ranges; every method timed on each tensor in the same pass "
        f"(best of {repeats}), including the final fake-quantization. REQuant is NumPy on one thread; "
        "the torch-based methods use 2 torch threads. `ratio` = method seconds / REQuant-alpha seconds "
        "(> 1: REQuant is faster). Evaluations = loss evaluations per tensor (REQuant: alpha candidates, "
        "each O(2^b log n) on sorted prefix sums; the grids: one O(n) fake-quant pass each).",
        "",
        f"Environment: {environment()}. The machine is shared with other jobs, so absolute seconds are "
        "noisy; the ratios come from interleaved runs and are the figures to compare.",
        "",
    ]
    for (set_name, bits), per in summary.items():
        ref = per.get("requant", {}).get("total")
        n_layers = next(iter(per.values()))["layers"]
        numel = next(iter(per.values()))["numel"]
        lines.append(f"### {SETS[set_name]}, W{bits} ({n_layers} tensors, {numel / 1e6:.2f}M weights)")
        lines.append("")
        rows = []
        for m, s in per.items():
            ratio = f"{s['total'] / ref:.1f}x" if ref else DASH
            rows.append(
                [
                    METHODS[m][0],
                    f"{s['evals']:.0f}",
                    f"{s['median_layer'] * 1e3:.2f}",
                    f"{s['max_layer'] * 1e3:.1f}",
                    f"{s['total']:.3f}",
                    ratio,
                ]
            )
        lines.append(
            md_table(
                [
                    "method",
                    "evaluations / tensor",
                    "median ms / tensor",
                    "max ms / tensor",
                    "model s",
                    "ratio vs REQuant",
                ],
                rows,
            )
        )
        lines.append("")
    return "\n".join(lines)


def speed_section(
    summary: Summary,
    cmd: str,
    model_runs: dict[str, list[float]],
    grid_s: float,
) -> str:
    """Issue-3 speed: whole-model REQuant seconds on the ResNet-50-sized set at W4."""
    lines = [
        "## Speed: ResNet-50-sized weights, per tensor, W4",
        "",
        f"Command: `{cmd}`. 54 tensors with ResNet-50's shapes, 25.5M He-normal values (seed 0). "
        "REQuant = `estimate_range(w, 4, space=...)` (and then `fake_quantize(w)`) over all tensors, best of "
        f"{len(next(iter(model_runs.values())))} whole-model runs; reference = a 100-candidate fake-quant "
        "grid (torch `fake_quantize_per_tensor_affine` + MSE per candidate, torchao MSE observer style) "
        "on the same tensors in the same run.",
        "",
        f"Environment: {environment()}; shared machine (other jobs running).",
        "",
    ]
    rows = []
    for space, runs in model_runs.items():
        best = min(runs)
        rows.append(
            [
                space,
                f"{best:.3f}",
                "yes" if best < 0.3 else "**no**",
                f"{grid_s:.2f}",
                f"{grid_s / best:.1f}x",
                "yes" if grid_s / best >= 10 else "**no**",
            ]
        )
    lines.append(md_table(["REQuant", "seconds", "< 0.3 s", "100-grid s", "ratio", ">= 10x"], rows))
    return "\n".join(lines)
