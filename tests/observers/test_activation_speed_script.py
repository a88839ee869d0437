"""benchmarks/activation_observer_speed.py runs end to end on a tiny model (no shared data needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "activation_observer_speed.py"


def test_speed_script_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("activation_observer_speed_script", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    assert mod.main(["--model", "smallcnn", "--calib-batches", "2", "--batch-size", "16", "--test-images", "32",
                     "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "| 0..127 |" in out and "| 0..15 |" in out
    # at 4 bits REQuant's range beats HistogramObserver's on every point of this small CNN
    row = next(ln for ln in out.splitlines() if ln.startswith("| 0..15 | calibration"))
    points = row.split("|")[-2].strip()
    good, total = (int(v) for v in points.split("/"))
    assert total > 0 and good == total
