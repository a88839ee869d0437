"""``RangeObjective.near_breakpoints`` is the selection from the full ``breakpoints`` array, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from requant_plugin.core import Grid
from requant_plugin.core.breakpoints import select_near
from requant_plugin.core.estimate import objective_for_rows


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("p", [1.0, 0.5])
@pytest.mark.parametrize("symmetric", [False, True])
def test_near_breakpoints_equal_the_full_selection(seed: int, bits: int, p: float, symmetric: bool) -> None:
    rng = np.random.default_rng(seed)
    rows, n = int(rng.integers(1, 40)), int(rng.integers(1, 300))
    w = (rng.standard_t(3, size=(rows, n)) * rng.uniform(0.01, 3.0, size=(rows, 1))).astype(np.float32)
    if seed % 3 == 0:
        w[0] = 0.0  # an all-zero row
        w[-1, : n // 2] = np.round(w[-1, : n // 2], 1)  # repeated values
    obj = objective_for_rows(w, Grid.from_bits(bits, symmetric=symmetric), p=p)
    center = rng.uniform(0.05, 1.0, size=rows)
    for limit in (3, 2048):
        want = select_near(obj.breakpoints(1 << 30), center, 0.01, limit)
        got = obj.near_breakpoints(center, 0.01, 1 << 30, limit)
        assert want is not None and got is not None
        np.testing.assert_array_equal(got, want)
    assert obj.near_breakpoints(center, 0.01, 0, 10) is None


@pytest.mark.parametrize("seed", range(4))
def test_transformed_keys_are_one_ascending_array_with_a_band_per_row(seed: int) -> None:
    """``obj.transformed`` is ``T(values)``; its keys put row ``r`` on ``[3r, 3r + 1]``, ascending,
    so that a binary search for ``3r + u`` (``0 <= u <= 1``) lands inside row ``r``."""
    from requant_plugin.core.breakpoints import band_keys

    rng = np.random.default_rng(seed)
    w = rng.standard_t(3, size=(int(rng.integers(1, 30)), int(rng.integers(1, 200))))
    w[0] = 0.0  # a constant row (zero span)
    obj = objective_for_rows(w, Grid.from_bits(4), p=0.5)
    np.testing.assert_array_equal(obj.transformed, obj.transform.forward(obj.values))
    keys = obj.transformed_keys
    np.testing.assert_array_equal(keys, band_keys(obj.transformed))
    assert np.all(np.diff(keys) >= 0)
    band = keys.reshape(obj.rows, obj.n) - 3.0 * np.arange(obj.rows)[:, None]
    assert np.all(band >= -1e-12) and np.all(band <= 1 + 1e-12)
    assert np.all(band[:, 0] == 0.0)
