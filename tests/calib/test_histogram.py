"""HistogramCalibrator: the streaming-histogram contract on its own (dict buffers) and as the observers' state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from requant_plugin.calib import Calibrator, HistogramCalibrator, histogram_from_state, merge_states
from requant_plugin.core import StreamingHistogram
from requant_plugin.observers import REQuantObserver


def _batches(seed: int, n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.relu(torch.randn(4, 8, 16, 16, generator=g)) * (1 + i) for i in range(n)]


def test_is_a_calibrator_and_empty_before_data() -> None:
    cal = HistogramCalibrator(bins=64)
    assert isinstance(cal, Calibrator)
    assert cal.compute_range() is None and cal.histogram().empty
    assert set(cal.buffers) == {"min_val", "max_val", "hist_meta", "hist_count", "hist_sum", "hist_sumsq",
                                "range_factor"}


def test_exact_mode_equals_streaming_histogram_update() -> None:
    """The ONNX export's path: every value binned in float64, bit-identical to StreamingHistogram.update."""
    rng = np.random.default_rng(0)
    cal, ref = HistogramCalibrator(bins=128, exact=True), StreamingHistogram(128)
    for scale in (1.0, 3.0, 0.5, 10.0):
        x = (rng.standard_normal(5000) * scale).astype(np.float32)
        cal.collect(x)
        ref.update(x)
    got = cal.histogram()
    for key, value in ref.state().items():
        np.testing.assert_array_equal(got.state()[key], value)
    with pytest.raises(ValueError, match="NaN or Inf"):
        cal.collect(np.array([np.nan], dtype=np.float32))


def test_observer_state_is_the_calibrators_buffers() -> None:
    """The observer keeps no statistics of its own: a standalone calibrator fed the same batches
    (same dtype of min/max) ends with the same buffers and the same range."""
    obs = REQuantObserver()
    cal = HistogramCalibrator(bins=obs.bins, grid=obs.grid, dtype=torch.float32)
    for x in _batches(1):
        obs(x)
        cal.collect(x)
    state = obs.state_dict()
    for name, value in cal.buffers.items():
        assert torch.equal(state[name], value), name
    rng = cal.compute_range()
    assert rng is not None
    scale, zp = obs.calculate_qparams()
    alpha = obs.last_alpha
    assert alpha is not None and alpha == cal.last_alpha
    assert float(rng.hi) == pytest.approx(alpha * float(obs.max_val))
    assert scale.numel() == 1 and zp.numel() == 1


def test_merge_and_merge_states_agree_and_leave_inputs_alone() -> None:
    a, b = HistogramCalibrator(bins=64), HistogramCalibrator(bins=64)
    for x in _batches(2):
        a.collect(x)
    for x in _batches(3):
        b.collect(-x)
    states = [{k: v.clone() for k, v in c.buffers.items()} for c in (a, b)]
    before = [{k: v.clone() for k, v in s.items()} for s in states]
    merged = merge_states(states)
    for s, old in zip(states, before, strict=True):
        assert all(torch.equal(s[k], old[k]) for k in s)
    a.merge(b)
    for name in ("hist_meta", "hist_count", "hist_sum", "hist_sumsq", "min_val", "max_val"):
        assert torch.equal(merged[name], a.buffers[name]), name
    hist = histogram_from_state(merged)
    assert hist.min == float(merged["min_val"]) and hist.max == float(merged["max_val"])
    with pytest.raises(TypeError, match="no merge rule"):
        a.merge(object())  # type: ignore[arg-type]


def test_range_factor_and_reset() -> None:
    cal = HistogramCalibrator(bins=64, fixed_alpha=1.0)
    cal.collect(torch.linspace(-1.0, 2.0, 1000))
    rng = cal.compute_range()
    assert rng is not None and (float(rng.lo), float(rng.hi)) == (-1.0, 2.0)
    cal.set_range_factor(0.5)
    rng = cal.compute_range()
    assert rng is not None and (float(rng.lo), float(rng.hi)) == (-0.5, 1.0)
    with pytest.raises(ValueError, match="range_factor must be in"):
        cal.set_range_factor(1.5)
    cal.reset()
    assert cal.compute_range() is None and cal.histogram().empty


@pytest.mark.parametrize(("option", "match"), [({"bins": 8}, "bins must be at least"),
                                               ({"sample_size": 10}, "sample_size must be at least")])
def test_options_are_validated(option: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HistogramCalibrator(**option)  # type: ignore[arg-type]
