"""Short rows (``n < 2**b``) are evaluated by direct fake quantization: it equals the closed form and
the prefix-sum path, ties included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from refs.quantizers import ref_mse, sample

from requant_plugin.core import Grid, golden_search, grid_search, objective_for_rows
from requant_plugin.core.direct import direct_is_cheaper


@settings(max_examples=80, deadline=None)
@given(dist=st.sampled_from(["gaussian", "laplace", "student_t3"]), bits=st.sampled_from([2, 3, 4, 6, 8]),
       space=st.sampled_from(["uniform", "sqrt"]), symmetric=st.booleans(), seed=st.integers(0, 99_999),
       n=st.integers(1, 40), alpha=st.floats(0.01, 1.0))
def test_short_rows_equal_direct_fake_quant(dist: str, bits: int, space: str, symmetric: bool, seed: int,
                                            n: int, alpha: float) -> None:
    rows = np.stack([sample(dist, n, seed + r) for r in range(4)])
    obj = objective_for_rows(rows, Grid.from_bits(bits, symmetric=symmetric), p=0.5 if space == "sqrt" else 1.0)
    want = np.array([ref_mse(r, alpha, bits, symmetric, space) for r in rows])
    every = obj(np.full((4, 1), alpha))[:, 0]
    some = obj.rows_call(np.full((2, 1), alpha), np.array([1, 3]))[:, 0]
    assert np.allclose(every, want, rtol=1e-6, atol=1e-14)
    assert np.allclose(some, want[[1, 3]], rtol=1e-6, atol=1e-14)


def test_depthwise_rows_take_the_direct_path_and_match_the_dense_grid() -> None:
    assert direct_is_cheaper(9, 256) and not direct_is_cheaper(4608, 16)
    rows = np.stack([sample("laplace", 9, s) for s in range(32)])
    for bits in (4, 8):
        obj = objective_for_rows(rows, Grid.from_bits(bits))
        fast, dense = golden_search(obj), grid_search(obj, 2000)
        assert np.all(fast.mse <= dense.mse * 1.001 + 1e-15)


def test_symmetric_extreme_value_tie_rounds_half_to_even() -> None:
    # torch's symmetric scale amax / 127.5 puts the extreme weight exactly on a tie at alpha = 1
    w = np.array([[-1.0, -0.3, 0.2, 0.5]], dtype=np.float32)
    for space in ("uniform", "sqrt"):
        obj = objective_for_rows(w, Grid.from_bits(3, symmetric=True), p=0.5 if space == "sqrt" else 1.0)
        assert abs(float(obj(np.array([[1.0]]))[0, 0]) - ref_mse(w[0], 1.0, 3, True, space)) < 1e-12


def test_sqrt_space_round_off_tie_is_an_exact_tie() -> None:
    # the most negative weight sits on the -127.5 midpoint in the sqrt space at alpha = 1 (where the
    # closed form's y / s computes to -127.49999999999999): half to even (-128), as in exact arithmetic
    w = sample("laplace", 999, 74)
    w = np.concatenate([np.sort(w)[:3], w[:150], np.sort(w)[-3:]])
    obj = objective_for_rows(w[None, :], Grid.from_bits(8, symmetric=True), p=0.5)
    fast = float(obj(np.array([[1.0]]))[0, 0])
    assert abs(fast - ref_mse(w, 1.0, 8, True, "sqrt")) <= 1e-9 * fast
