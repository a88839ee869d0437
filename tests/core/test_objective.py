"""The prefix-sum objective equals direct fake quantization (independent closed form)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from refs.quantizers import ref_mse, sample

from requant_plugin.core import Grid, PowerTransform, RangeObjective, objective_for_rows


@settings(max_examples=60, deadline=None)
@given(dist=st.sampled_from(["gaussian", "laplace", "student_t3"]), bits=st.sampled_from([2, 3, 4, 6, 8]),
       space=st.sampled_from(["uniform", "sqrt"]), symmetric=st.booleans(), seed=st.integers(0, 99_999),
       alpha=st.floats(0.01, 1.0))
def test_fast_objective_equals_direct_fake_quant(dist: str, bits: int, space: str, symmetric: bool,
                                                 seed: int, alpha: float) -> None:
    w = sample(dist, 999, seed)
    obj = objective_for_rows(w[None, :], Grid.from_bits(bits, symmetric=symmetric),
                             p=0.5 if space == "sqrt" else 1.0)
    fast = float(obj(np.array([[alpha]]))[0, 0])
    direct = ref_mse(w, alpha, bits, symmetric, space)
    assert abs(fast - direct) <= 1e-6 * direct + 1e-15


def test_alpha_one_ties_round_half_to_even() -> None:
    # With torch's symmetric scale amax / 127.5 the extreme weight sits exactly on a tie at
    # alpha = 1; the objective must round it as torch.round does.
    w = np.array([-1.0, -0.3, 0.2, 0.5], dtype=np.float32)
    for space in ("uniform", "sqrt"):
        obj = objective_for_rows(w[None, :], Grid.from_bits(3, symmetric=True),
                                 p=0.5 if space == "sqrt" else 1.0)
        assert abs(float(obj(np.array([[1.0]]))[0, 0]) - ref_mse(w, 1.0, 3, True, space)) < 1e-12


def test_float_roundoff_tie_in_the_sqrt_space_is_an_exact_tie() -> None:
    # found by hypothesis: the most negative weight sits exactly on the -127.5 midpoint in the
    # sqrt space at alpha = 1, where y / s computes to -127.49999999999999; both sides must
    # treat it as the exact tie it is (half to even: -128)
    w = sample("laplace", 999, 74)
    obj = objective_for_rows(w[None, :], Grid.from_bits(8, symmetric=True), p=0.5)
    fast = float(obj(np.array([[1.0]]))[0, 0])
    assert abs(fast - ref_mse(w, 1.0, 8, True, "sqrt")) <= 1e-9 * fast


def test_transformed_loss_space_matches_direct() -> None:
    w = sample("laplace", 500, 1).astype(np.float64)
    obj = objective_for_rows(w[None, :], Grid.from_bits(4), p=0.5, loss_space="transformed")
    m = np.abs(w).max()
    y = np.sign(w) * np.sqrt(np.abs(w) / m)
    for alpha in (0.3, 0.77, 1.0):
        lo, hi = alpha * min(y.min(), 0), alpha * max(y.max(), 0)
        s = (hi - lo) / 15
        z = np.round(-lo / s)
        yq = s * (np.clip(np.round(y / s) + z, 0, 15) - z)
        assert abs(float(obj(np.array([[alpha]]))[0, 0]) - np.mean((y - yq) ** 2)) < 1e-12


def test_per_channel_rows_are_independent() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(5, 300)) * np.array([[1e-3], [1.0], [10.0], [0.5], [2.0]])
    obj = objective_for_rows(rows, Grid.from_bits(4))
    alphas = np.full((5, 1), 0.8)
    batched = obj(alphas)[:, 0]
    for r in range(5):
        single = objective_for_rows(rows[r:r + 1], Grid.from_bits(4))(np.array([[0.8]]))[0, 0]
        assert abs(batched[r] - single) <= 1e-9 * single
        assert abs(batched[r] - ref_mse(rows[r], 0.8, 4, False, "uniform")) <= 1e-9 * single


def test_large_row_blocked_prefix_sums_match_direct() -> None:
    w = sample("gaussian", 200_003, 7)
    obj = objective_for_rows(w[None, :], Grid.from_bits(8))
    for alpha in (0.2, 0.9, 1.0):
        direct = ref_mse(w, alpha, 8, False, "uniform")
        assert abs(float(obj(np.array([[alpha]]))[0, 0]) - direct) <= 1e-6 * direct


def test_unknown_loss_space_lists_the_valid_values() -> None:
    rows = np.sort(np.random.default_rng(0).normal(size=(1, 50)), axis=1)
    with pytest.raises(ValueError, match=r"unknown loss space 'both': valid values are \['original', 'transformed'\]"):
        RangeObjective(rows, Grid.from_bits(4), PowerTransform.identity(), rows[:, 0], rows[:, -1], "both")
