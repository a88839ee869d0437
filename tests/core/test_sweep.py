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
    """The best piece minimum, evaluated exactly, is at most ``L`` at 20,000 points of the window and
    at both sides of every code change in it (the brute force), and lies in the window. Tolerance 1e-4: the
    candidates keep 1e-5 (relative) away from each code change (so that float32 fake quantizers assign
    the codes the sweep counted), and ``L`` may fall by a few times that up to the change."""
    rng = np.random.default_rng(seed)
    rows = rng.standard_t(3, size=(5, n)).astype(np.float32)
    obj = objective_for_rows(rows, Grid.from_bits(bits, symmetric=symmetric), p=p)
    lo = rng.uniform(0.2, 0.7, size=5)
    hi = np.minimum(lo + rng.uniform(0.05, 0.4, size=5), 1.0)
    cand = piece_minima(obj, lo, hi, change_runs(obj, lo, hi))
    assert np.all(np.isfinite(cand[:, 0]))
    assert np.all((cand[:, 0] >= lo) & (cand[:, 0] <= hi))
    got = obj(cand[:, :1])[:, 0]
    dense = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, 20_000)[None, :]
    bp = obj.breakpoints(1 << 30)
    assert bp is not None
    inside = (bp >= lo[:, None]) & (bp <= hi[:, None])
    sides = np.concatenate([np.where(inside, bp * (1 - 1e-5), lo[:, None]),
                            np.where(inside, np.minimum(bp * (1 + 1e-5), hi[:, None]), lo[:, None])], axis=1)
    brute = np.minimum(obj(dense).min(axis=1), obj(sides).min(axis=1))
    assert np.all(got <= brute * (1 + 1e-4) + 1e-300)


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
