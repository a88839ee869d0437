"""StreamingHistogram: exact moments, growing range, merge, state, and its search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from refs.quantizers import ref_mse

from requant_plugin.core import Grid, StreamingHistogram


def _batches(seed: int, n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # ReLU-like activations whose range grows from batch to batch
    return [np.maximum(rng.normal(0.2, 1.0 + i, size=500), 0) * (1 + i) for i in range(n)]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 9999), bins=st.sampled_from([16, 64, 2048]))
def test_moments_are_exact_while_the_range_grows(seed: int, bins: int) -> None:
    h = StreamingHistogram(bins)
    data = _batches(seed)
    for b in data:
        h.update(b)
    allv = np.concatenate(data)
    assert h.total == allv.size
    assert h.sum.sum() == pytest.approx(allv.sum(), rel=1e-12)
    assert h.sumsq.sum() == pytest.approx((allv**2).sum(), rel=1e-12)
    assert (h.min, h.max) == (allv.min(), allv.max())
    # every value sits in the bin its index says
    idx = np.floor(allv / h.width).astype(np.int64) - h.offset
    np.testing.assert_array_equal(np.bincount(idx, minlength=bins), h.count)


def test_merge_equals_single_stream() -> None:
    data = _batches(3)
    a, b, one = StreamingHistogram(256), StreamingHistogram(256), StreamingHistogram(256)
    for i, x in enumerate(data):
        (a if i % 2 else b).update(x)
        one.update(x)
    a.merge(b)
    assert a.total == one.total
    assert a.sum.sum() == pytest.approx(one.sum.sum(), rel=1e-12)
    assert (a.min, a.max) == (one.min, one.max)


def test_state_round_trip() -> None:
    h = StreamingHistogram(128)
    for x in _batches(1):
        h.update(x)
    g = StreamingHistogram.from_state(h.state())
    for k in ("count", "sum", "sumsq"):
        np.testing.assert_array_equal(getattr(g, k), getattr(h, k))
    assert (g.width, g.offset, g.min, g.max) == (h.width, h.offset, h.min, h.max)


def test_nan_and_empty() -> None:
    h = StreamingHistogram()
    h.update(np.array([]))
    assert h.empty
    with pytest.raises(ValueError, match="empty"):
        h.estimate(Grid.from_bits(8))
    with pytest.raises(ValueError, match="NaN"):
        h.update(np.array([1.0, np.nan]))


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_histogram_search_close_to_raw_data_optimum(bits: int, symmetric: bool) -> None:
    h = StreamingHistogram(2048)
    data = _batches(5)
    for x in data:
        h.update(x)
    allv = np.concatenate(data)
    grid = Grid.from_bits(bits, symmetric=symmetric)
    est = h.estimate(grid)
    dense = h.estimate(grid, search="grid")
    assert est.mse[0] <= dense.mse[0] * 1.001  # golden within 0.1% of the dense grid, same histogram
    # the range chosen on the histogram is near-optimal on the raw values too
    got = ref_mse(allv, float(est.alpha[0]), bits, symmetric, "uniform")
    best = min(ref_mse(allv, k / 400, bits, symmetric, "uniform") for k in range(1, 401))
    assert got <= best * 1.02
    assert got <= ref_mse(allv, 1.0, bits, symmetric, "uniform") * (1 + 1e-9)


def test_constant_first_batch_then_real_data() -> None:
    h = StreamingHistogram(256)
    h.update(np.zeros(100))
    data = np.abs(np.random.default_rng(0).normal(size=1000)) * 50
    h.update(data)
    assert h.total == 1100 and np.isfinite(h.width)
    assert h.sum.sum() == pytest.approx(data.sum(), rel=1e-12)
    est = h.estimate(Grid.from_bits(8))
    assert 0 < est.alpha[0] <= 1 and np.isfinite(est.mse[0])


@pytest.mark.parametrize("first", [np.full(50, 3.0), np.zeros(10), np.random.default_rng(1).random(100) * 1e-30])
def test_degenerate_first_batch_and_huge_growth_keep_exact_moments(first: np.ndarray) -> None:
    """A single-value histogram has no meaningful bin width, and growth beyond 2**40 cannot be
    reached by doubling: both rebuild the window with the bins moved by their means, so count,
    sum and sum of squares stay exact (the same window rule as the activation observers)."""
    batches = [first, np.random.default_rng(2).random(300), np.random.default_rng(3).random(300) * 1e15]
    h = StreamingHistogram(256)
    for b in batches:
        h.update(b)
    allv = np.concatenate(batches)
    assert h.total == allv.size and h.min == allv.min() and h.max == allv.max()
    assert h.sum.sum() == pytest.approx(allv.sum(), rel=1e-12)
    assert h.sumsq.sum() == pytest.approx((allv ** 2).sum(), rel=1e-12)
    assert h.width <= (allv.max() - allv.min()) / 64  # the window still resolves the data
