"""The one-sweep evaluations of :mod:`requant_plugin.core.sweep` against direct evaluations of ``L``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from requant_plugin.core import Grid, golden_search, grid_search, objective_for_rows
from requant_plugin.core.breakpoints import change_runs
from requant_plugin.core.sweep import piece_minima


@settings(max_examples=30, deadline=None)
@given(bits=st.sampled_from([2, 3, 4]), p=st.sampled_from([1.0, 0.5]), symmetric=st.booleans(),
       seed=st.integers(0, 10_000), n=st.integers(20, 400))
def test_piece_minima_is_the_minimum_of_the_window(bits: int, p: float, symmetric: bool, seed: int, n: int) -> None:
    """The best piece minimum, evaluated exactly, is at most ``L`` at every one of 20,000 points of the
    window that keeps ``side`` (1e-5, relative) away from each code change (the candidates do, so
    that float32 fake quantizers assign the codes the sweep counted), and lies in the window."""
    side = 1e-5
    rng = np.random.default_rng(seed)
    rows = rng.standard_t(3, size=(5, n)).astype(np.float32)
    obj = objective_for_rows(rows, Grid.from_bits(bits, symmetric=symmetric), p=p)
    lo = rng.uniform(0.2, 0.7, size=5)
    hi = np.minimum(lo + rng.uniform(0.05, 0.4, size=5), 1.0)
    cand = piece_minima(obj, lo, hi, change_runs(obj, lo, hi), side=side)
    assert np.all(np.isfinite(cand[:, 0]))
    assert np.all((cand[:, 0] >= lo) & (cand[:, 0] <= hi))
    got = obj(cand[:, :1])[:, 0]
    bp = obj.breakpoints(1 << 30)
    assert bp is not None
    for r in range(5):
        dense = np.linspace(lo[r], hi[r], 20_000)
        changes = np.sort(bp[r][np.isfinite(bp[r])])
        at = np.clip(np.searchsorted(changes, dense), 1, changes.size - 1)
        near = np.minimum(np.abs(dense - changes[at - 1]), np.abs(dense - changes[at]))
        allowed = dense[near > side * dense * 1.001]
        brute = obj(np.broadcast_to(allowed[None, :], (obj.rows, allowed.size)))[r].min()
        assert got[r] <= brute * (1 + 1e-9) + 1e-300, r


def test_many_smooth_rows_each_within_0p1_percent_of_the_dense_grid() -> None:
    """1,024 rows of 512 Gaussian values (a He-initialised 1x1 conv) at 4 bits on the sqrt grid: every
    row within 0.1 % of the 2,000-point grid. Their ``L`` is flat to about 1/sqrt(n) over a wide
    plateau with its minimum anywhere on it, where golden-section brackets of a 48-point scan miss
    some rows by up to 1.3 % (ResNet-50's layer4.2.conv3)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((1024, 512)) * np.sqrt(2 / 2048)).astype(np.float32)
    got = golden_search(objective_for_rows(w, Grid.from_bits(4), p=0.5))
    dense = grid_search(objective_for_rows(w, Grid.from_bits(4), p=0.5), 2000)
    assert np.all(got.mse <= dense.mse * 1.001)
