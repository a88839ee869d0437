"""``python -m benchmarks.activation_observer_speed`` runs end to end on a tiny model (no shared data needed)."""

from __future__ import annotations

from types import ModuleType

import pytest

import benchmarks.activation_observer_speed


def _load() -> ModuleType:
    return benchmarks.activation_observer_speed


def test_speed_script_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load()
    assert mod.main(["--model", "smallcnn", "--calib-batches", "2", "--batch-size", "16", "--test-images", "32",
                     "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "| 0..127 |" in out and "| 0..15 |" in out
    # at 4 bits REQuant's range beats HistogramObserver's on every point of this small CNN
    row = next(ln for ln in out.splitlines() if ln.startswith("| 0..15 | calibration"))
    points = row.split("|")[-2].strip()
    good, total = (int(v) for v in points.split("/"))
    assert total > 0 and good == total


def test_vs_exact_mode_compares_scales_with_exact_binning(capsys: pytest.CaptureFixture[str]) -> None:
    """``--vs-exact``: each observer's scale against a REQuantObserver binning every value; with
    ``--sample-size all`` the timed REQuant observer is exact too, so it must match to 0 %."""
    mod = _load()
    try:
        args = ["--model", "smallcnn", "--calib-batches", "2", "--batch-size", "16", "--test-images", "32",
                "--no-write", "--vs-exact"]
        assert mod.main([*args, "--sample-size", "all"]) == 0
        out = capsys.readouterr().out
        rows = [ln for ln in out.splitlines() if ln.startswith("| 0..")]
        assert len(rows) == 4
        exact_rows = [r for r in rows if "REQuantObserver" in r]
        assert all("| 0.00 % | 0.00 % | 0/" in r for r in exact_rows)
    finally:
        mod.Tap.sample_size, mod.Tap.reference = mod.DEFAULT_SAMPLE_SIZE, False
