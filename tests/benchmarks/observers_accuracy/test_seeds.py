"""The multi-seed FX W8A8 summary of ``python -m benchmarks.observers_accuracy --only fx --seeds ...``:
per-seed rows, means and the paired REQuant - default statistics, checked on known numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import benchmarks.observers_accuracy as oa


def _runs(default: list[float], requant: list[float]) -> dict[int, dict[str, dict]]:
    runs: dict[int, dict[str, dict]] = {}
    for seed, (d, q) in enumerate(zip(default, requant, strict=True)):
        entry: dict[str, Any] = {"fp32": 88.38, "test_images": 10000}
        for key, _ in oa.FX_VARIANTS:
            entry[f"fx_w8a8_{key}"] = {"acc": {"default": d, "requant": q, "requant_exact": d + 0.01,
                                             "requant_refined": d + 0.02}.get(key, 88.0)}
        runs[seed] = {"resnet56": entry}
    return runs


def test_seed_summary_reports_paired_differences() -> None:
    default, requant = [88.26, 88.20, 88.25, 88.11, 88.14], [88.23, 88.14, 88.16, 88.17, 88.14]
    md = oa.seeds_markdown(_runs(default, requant), "python -m benchmarks.observers_accuracy --only fx --seeds 0 1")
    d = np.array(requant) - np.array(default)
    assert f"REQuant - default {d.mean():+.3f} points on average (SD {np.std(d, ddof=1):.3f}" in md
    assert f"standard error {np.std(d, ddof=1) / np.sqrt(5):.3f}" in md
    assert "at or above on 2 of 5 samples; REQuant - FP32" in md  # seeds 3 (+0.06) and 4 (tie)
    assert f"| resnet56 | mean (SD) | 88.38 | {np.mean(default):.2f}" in md
    assert md.count("| resnet56 | ") == 6  # five seeds and the mean row
    assert "test images per model: 10,000" in md
    assert "exact histograms (`act_sample_size=None`) - default +0.010 points on average" in md
    assert "at or above on 5 of 5 samples" in md
    assert "refined activation ranges (`refine_activation_ranges`) - default +0.020 points on average" in md


def test_seed_plot_is_a_png(tmp_path: Path) -> None:
    png = oa.plot_seeds(_runs([86.8, 86.9, 86.7], [86.9, 86.95, 86.8]), tmp_path / "seeds.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_seeds_need_the_fx_flow(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        oa.main(["--seeds", "0", "1", "--no-write"])
    assert exc.value.code == 2 and "add --only fx" in capsys.readouterr().err
