"""PinnedCalibrator: finds the given grid a weight lies on."""

from __future__ import annotations

import pytest
import torch

from requant_plugin.calib import Calibrator, PinnedCalibrator


def _grid(layer: str, scales: list[float]) -> dict[str, object]:
    return {"layer": layer, "scale": scales, "zero_point": [0] * len(scales), "quant_min": -8, "quant_max": 7,
            "ch_axis": 0}


def test_finds_the_grid_and_returns_its_qparams() -> None:
    grids = [_grid("a", [0.1, 0.2]), _grid("b", [0.3, 0.7, 0.11])]
    cal = PinnedCalibrator(grids=grids, quant_min=-8, quant_max=7)
    assert isinstance(cal, Calibrator) and cal.compute_range() is None
    codes = torch.tensor([[3.0, -2.0, 7.0], [1.0, 0.0, -8.0]])
    w = codes * torch.tensor([[0.1], [0.2]])
    cal.collect(w)
    found = cal.compute_range()
    assert found is not None and cal.layer == "a"
    assert torch.equal(found.scale, torch.tensor([0.1, 0.2], dtype=torch.float32))
    assert torch.equal(found.zero_point, torch.tensor([0, 0]))
    cal.reset()
    assert cal.compute_range() is None


def test_off_grid_and_bad_grids_raise() -> None:
    cal = PinnedCalibrator(grids=[_grid("a", [0.1, 0.2])], quant_min=-8, quant_max=7)
    with pytest.raises(ValueError, match="lies on no grid"):
        cal.collect(torch.tensor([[0.1234], [0.5]]))
    with pytest.raises(ValueError, match="needs the grids"):
        PinnedCalibrator(grids=[], quant_min=-8, quant_max=7)
    with pytest.raises(ValueError, match="exceed the observer's range"):
        PinnedCalibrator(grids=[_grid("a", [0.1])], quant_min=-4, quant_max=3)
