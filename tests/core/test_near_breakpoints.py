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
