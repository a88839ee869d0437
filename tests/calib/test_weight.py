"""WeightCalibrator: REQuant's search on a weight tensor, cached per distinct tensor."""

from __future__ import annotations

import pytest
import torch

from requant_plugin import estimate_range
from requant_plugin.calib import Calibrator, WeightCalibrator
from requant_plugin.core import Grid
from requant_plugin.observers import PerChannelREQuantObserver


def _w(seed: int = 0) -> torch.Tensor:
    return torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(seed))


def test_per_channel_range_is_alpha_times_data_range() -> None:
    grid = Grid(-8, 7, True, "torch")
    cal = WeightCalibrator(grid=grid, ch_axis=0)
    assert isinstance(cal, Calibrator) and cal.compute_range() is None
    w = _w()
    cal.collect(w)
    est = estimate_range(w, quant_min=-8, quant_max=7, symmetric=True, per_channel=True, ch_axis=0,
                         convention="torch")
    rng = cal.compute_range()
    assert rng is not None
    lo, hi = w.reshape(6, -1).aminmax(dim=1)
    expect_hi = (est.alpha.double().reshape(-1) * hi.double()).float()
    assert torch.equal(rng.hi, expect_hi)
    assert torch.equal(rng.lo, (est.alpha.double().reshape(-1) * lo.double()).float())


def test_same_tensor_is_searched_once_and_reset_forgets() -> None:
    cal = WeightCalibrator(grid=Grid(-8, 7, True, "torch"))
    w = _w(1)
    cal.collect(w)
    cal.collect(w)
    assert cal.searches == 1
    with torch.no_grad():
        w.mul_(2.0)
    cal.collect(w)
    assert cal.searches == 2
    cal.reset()
    assert cal.compute_range() is None


def test_observer_matches_standalone_calibrator() -> None:
    obs = PerChannelREQuantObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-8, quant_max=7)
    cal = WeightCalibrator(grid=obs.grid, ch_axis=0, input_mean_ratio=0.0)
    w = _w(2)
    obs(w)
    cal.collect(w)
    for name in ("min_val", "max_val", "alpha", "clip_min", "clip_max"):
        assert torch.equal(getattr(obs, name), cal.buffers[name]), name


def test_errors() -> None:
    cal = WeightCalibrator(grid=Grid(-8, 7, True, "torch"), ch_axis=5)
    with pytest.raises(ValueError, match="ch_axis"):
        cal.collect(_w())
    with pytest.raises(ValueError, match="NaN/Inf"):
        WeightCalibrator(grid=Grid(-8, 7, True, "torch")).collect(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="exponent p"):
        WeightCalibrator(grid=Grid(-8, 7, True, "torch"), p=0.0)
    with pytest.raises(TypeError, match="no merge rule"):
        cal.merge(cal)
