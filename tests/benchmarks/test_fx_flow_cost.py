"""``python -m benchmarks.fx_flow_cost`` runs end to end on a tiny model and writes its section
into a doc in a temp folder (the checked-in ``docs/fx-flow-cost.md`` is left alone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import fx_flow_cost


def test_fx_flow_cost_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "fx-flow-cost.md"
    assert fx_flow_cost.main(["--model", "smallcnn", "--size", "16", "--batches", "2", "--batch-size", "2",
                              "--repeats", "1", "--threads", "1", "--doc", str(doc)]) == 0
    out = capsys.readouterr().out
    for label in ("prepare_fx", "calibration forward passes", "convert_fx", "weight observers", "total"):
        assert f"| {label}" in out or label in out
    assert "REQuant / torch, whole flow:" in out
    text = doc.read_text()
    assert "<!-- BEGIN fx-flow-cost-smallcnn-16 -->" in text and "<!-- END fx-flow-cost-smallcnn-16 -->" in text
    assert "python -m benchmarks.fx_flow_cost --model smallcnn" in text and "Machine: " in text
    # the REQuant weight observers ran inside convert (their search is timed there, not elsewhere)
    row = next(ln for ln in text.splitlines() if ln.startswith("| ... of which weight observers"))
    assert float(row.split("|")[3]) > 0.0


def test_observer_clock_restores_the_calibrators() -> None:
    from requant_plugin.calib.histogram import HistogramCalibrator
    from requant_plugin.calib.weight import WeightCalibrator

    before = (WeightCalibrator.__dict__["collect"], HistogramCalibrator.__dict__["compute_range"])
    with pytest.raises(RuntimeError), fx_flow_cost.ObserverClock().active():
        assert WeightCalibrator.__dict__["collect"] is not before[0]
        raise RuntimeError("interrupted")
    assert (WeightCalibrator.__dict__["collect"], HistogramCalibrator.__dict__["compute_range"]) == before
