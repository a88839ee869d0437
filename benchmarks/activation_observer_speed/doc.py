"""The tables of docs/observers-results.md written by the activation speed benchmark
(sections ``activation-speed*`` and ``activation-range-noise``)."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np
import torch

from benchmarks.activation_observer_speed.tap import RANGES, Tap


def exact_markdown(res: dict[str, Any], cmd: str) -> str:
    """How far each observer's scale lies from an exactly binned REQuantObserver's (every value)."""
    lines = [f"Command: `{cmd}`  ",
             f"Model: {res['model']} on {res['dataset']}, {res['points']} activation quantization points, "
             f"{res['batches']} calibration batches of {res['batch_size']}. Reference: "
             "`REQuantObserver(sample_size=None)` on the same tensors.", "",
             "| range | observer | mean abs(scale / exact - 1) | max | points off by more than 1 % |",
             "| :--- | :--- | ---: | ---: | ---: |"]
    for _, hi in RANGES:
        for name, label in (("requant", f"REQuantObserver (sample_size={Tap.sample_size})"),
                            ("histogram", "HistogramObserver")):
            d = res[f"0..{hi}"][f"{name}_vs_exact"]
            lines.append(f"| 0..{hi} | {label} | {100 * d['mean']:.2f} % | {100 * d['max']:.2f} % "
                         f"| {d['over_1pct']}/{res['points']} |")
    return "\n".join(lines)


def markdown(res: dict[str, Any], cmd: str) -> str:
    """The speed and output-range MSE tables."""
    lines = [
        f"Command: `{cmd}`  ",
        f"Model: {res['model']} on {res['dataset']}, {res['points']} activation quantization points "
        f"(prepare_fx, x86 mapping), {res['batches']} calibration batches of {res['batch_size']}, "
        f"{res['test_images']} held-out test images, {res['repeats']} timing runs (the median run is shown, "
        f"the speed-ups of all runs beside it). {res['env']}.",
        "",
        "| range | HistogramObserver ms/batch (wall / CPU) | REQuantObserver ms/batch (wall / CPU) "
        "| speed-up (wall / CPU) | wall speed-up, all runs | calculate_qparams total ms (Hist / REQuant) |",
        "| :--- | ---: | ---: | ---: | :--- | ---: |",
    ]
    for _, hi in RANGES:
        r = res[f"0..{hi}"]
        spread = ", ".join(f"{x:.1f}" for x in r.get("speedup_wall_runs", [r["speedup_wall"]]))
        lines.append(
            f"| 0..{hi} | {r['histogram_wall_ms']:.1f} / {r['histogram_cpu_ms']:.1f} "
            f"| {r['requant_wall_ms']:.1f} / {r['requant_cpu_ms']:.1f} "
            f"| **{r['speedup_wall']:.1f}x** / {r['speedup_cpu']:.1f}x | {spread} "
            f"| {r['histogram_qparams_ms']:.0f} / {r['requant_qparams_ms']:.0f} |")
    lines += [
        "",
        "| range | data | sum of per-point MSE, Histogram | sum of per-point MSE, REQuant | ratio "
        "| median per-point ratio | points where REQuant <= Histogram |",
        "| :--- | :--- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for _, hi in RANGES:
        r = res[f"0..{hi}"]
        for split, label in (("calib", "calibration"), ("test", "held-out")):
            hs, rs = r[f"{split}_mse_histogram"], r[f"{split}_mse_requant"]
            lines.append(f"| 0..{hi} | {label} | {hs:.4g} | {rs:.4g} | {rs / hs:.3f} "
                         f"| {r[f'{split}_median_ratio']:.3f} | {r[f'{split}_requant_not_worse']}/{res['points']} |")
    return "\n".join(lines)



def environment() -> str:
    """The software and machine line of the tables."""
    import torchao  # noqa: F401  (version only)

    return (f"Python {platform.python_version()}, torch {torch.__version__}, NumPy {np.__version__}, "
            f"{os.cpu_count()} CPU cores shared with other jobs, torch threads {torch.get_num_threads()}")
