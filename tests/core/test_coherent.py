"""The coherent objective equals its closed form on direct fake quantization, on every row path."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from refs.quantizers import ref_fake_quant, sample

from requant_plugin.core import CoherentErrorObjective, Grid, golden_search, grid_search, objective_for_rows


def _direct(w: np.ndarray, alpha: float, bits: int, space: str, rho: float) -> float:
    """``(sum d**2 + rho * (sum d)**2) / n`` with ``d = Q_alpha(w) - w``."""
    d = ref_fake_quant(w, alpha, bits, False, space) - np.asarray(w, np.float64)
    return float((np.sum(d * d) + rho * np.sum(d) ** 2) / d.size)


@settings(max_examples=40, deadline=None)
@given(dist=st.sampled_from(["gaussian", "laplace", "student_t3"]), bits=st.sampled_from([3, 4, 8]),
       space=st.sampled_from(["uniform", "sqrt"]), seed=st.integers(0, 99_999),
       alpha=st.floats(0.05, 1.0), rho=st.floats(0.0, 5.0))
def test_coherent_equals_direct_on_all_and_on_some_rows(dist: str, bits: int, space: str, seed: int,
                                                        alpha: float, rho: float) -> None:
    rows = np.stack([sample(dist, 257, seed + r) for r in range(3)])
    obj = CoherentErrorObjective(objective_for_rows(rows, Grid.from_bits(bits), p=0.5 if space == "sqrt" else 1.0),
                                 rho)
    want = np.array([_direct(rows[r], alpha, bits, space, rho) for r in range(3)])
    every = obj(np.full((3, 1), alpha))[:, 0]
    some = obj.rows_call(np.full((2, 1), alpha), np.array([0, 2]))[:, 0]
    assert np.allclose(every, want, rtol=1e-6, atol=1e-15)
    assert np.allclose(some, want[[0, 2]], rtol=1e-6, atol=1e-15)


def test_coherent_golden_search_matches_dense_grid() -> None:
    rows = np.stack([sample("laplace", 300, s) for s in range(6)])
    obj = CoherentErrorObjective(objective_for_rows(rows, Grid.from_bits(4)), 2.0)
    fast, dense = golden_search(obj), grid_search(obj, 2000)
    assert np.all(fast.mse <= dense.mse * 1.001 + 1e-15)
