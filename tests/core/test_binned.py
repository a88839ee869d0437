"""BinnedObjective: the histogram objective with straddling bins split, against raw-data fake quantization."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from refs.quantizers import ref_mse

from requant_plugin.core import Grid, PointMoments, RangeObjective, StreamingHistogram

ALPHAS = np.linspace(0.3, 1.0, 351)


def _collapsed(h: StreamingHistogram, grid: Grid) -> RangeObjective:
    """The objective without the split: every bin wholly at the code of its mean."""
    keep = h.count > 0
    means = np.clip(h.sum[keep] / h.count[keep], h.min, h.max)
    obj = h.objective(grid)
    return RangeObjective(means[None], grid, obj.transform, np.array([h.min]), np.array([h.max]),
                          moments=PointMoments(h.count[keep][None], h.sum[keep][None], h.sumsq[keep][None]))


@pytest.mark.parametrize("bits", [8, 7, 4])
def test_tracks_the_raw_data_mse_far_closer_than_bin_means(bits: int) -> None:
    x = np.maximum(np.random.default_rng(0).normal(0.2, 1.0, 50_000), 0) ** 1.5
    h = StreamingHistogram(2048)
    h.update(x)
    grid = Grid.from_bits(bits)
    ref = np.array([ref_mse(x, a, bits, False, "uniform") for a in ALPHAS])
    new = np.abs(h.objective(grid)(ALPHAS[None])[0] / ref - 1).max()
    old = np.abs(_collapsed(h, grid)(ALPHAS[None])[0] / ref - 1).max()
    assert new < 0.005 and new < old / 4, (new, old)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), levels=st.integers(2, 40), alpha=st.floats(0.2, 1.0),
       bits=st.sampled_from([4, 8]))
def test_point_masses_are_exact(seed: int, levels: int, alpha: float, bits: int) -> None:
    """Discrete data (one value per bin: zero variance) is not smeared: L equals the raw MSE."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, 3000) * 0.37 - 1.1
    h = StreamingHistogram(2048)
    h.update(x)
    got = float(h.objective(Grid.from_bits(bits))(np.array([[alpha]]))[0, 0])
    # up to the round-off of the moment formula (S2 - 2 v S1 + v^2 n cancels); smearing a bin
    # uniformly would add about (bin width / step)^2 ~ 1e-2 of the MSE
    assert got == pytest.approx(ref_mse(x, alpha, bits, False, "uniform"), rel=1e-6, abs=1e-12 * float(np.mean(x * x)))


def test_transformed_loss_space_is_the_plain_objective() -> None:
    x = np.abs(np.random.default_rng(1).standard_t(3, 20_000))
    h = StreamingHistogram(512)
    h.update(x)
    grid = Grid.from_bits(4)
    obj = h.objective(grid, p=0.5, loss_space="transformed")
    keep = h.count > 0
    plain = RangeObjective(np.clip(h.sum[keep] / h.count[keep], h.min, h.max)[None], grid, obj.transform,
                           obj.transform.forward(np.array([[h.min]]))[:, 0],
                           obj.transform.forward(np.array([[h.max]]))[:, 0], "transformed",
                           moments=PointMoments(h.count[keep][None], h.sum[keep][None], h.sumsq[keep][None]))
    np.testing.assert_array_equal(obj(ALPHAS[None]), plain(ALPHAS[None]))
    assert obj.breakpoints(10**9) is not None and h.objective(grid).breakpoints(10**9) is None
