"""The cross-validated target damp against an explicit ridge regression on the calibration rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requant_plugin.core.ridge_cv import TargetFold, cross_validated_damp, held_out_error


def rows(rng: np.random.Generator, m: int, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Float inputs ``x_f`` and quantized inputs ``x_q = x_f + noise`` (one row each)."""
    xf = rng.normal(size=(m, n)) @ rng.normal(size=(n, n))
    return xf, xf + noise * rng.normal(size=(m, n))


def fold(xf: np.ndarray, xq: np.ndarray, w: np.ndarray | None = None) -> TargetFold:
    """The fold's means (one group); with ``w`` the projected cross term ``E[x_q y_f^T]``."""
    m = xq.shape[0]
    gram, cross = xq.T @ xq / m, xq.T @ xf / m
    if w is None:
        return TargetFold(gram[None], cross[None], None, m)
    return TargetFold(gram[None], None, (cross @ w.T)[None], m)


def ridge(w: np.ndarray, xf: np.ndarray, xq: np.ndarray, damp: float) -> np.ndarray:
    """``argmin_V mean||W x_f - V x_q||^2 + lam ||V - W||^2``, ``lam = damp * mean(diag G)``, by least squares on
    the stacked rows ``[x_q / sqrt(m); sqrt(lam) I]`` (no normal equations, no factor shared with the library)."""
    m, n = xq.shape
    lam = damp * float(np.mean(np.sum(xq * xq, axis=0) / m))
    a = np.vstack([xq / np.sqrt(m), np.sqrt(lam) * np.eye(n)])
    b = np.vstack([xf @ w.T / np.sqrt(m), np.sqrt(lam) * w.T])
    return np.linalg.lstsq(a, b, rcond=None)[0].T


def direct_error(w: np.ndarray, v: np.ndarray, xf: np.ndarray, xq: np.ndarray) -> float:
    """``mean over rows of ||W x_f - V x_q||^2`` (summed over output channels)."""
    return float(np.mean(np.sum((xf @ w.T - xq @ v.T) ** 2, axis=1)))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 9), c=st.integers(1, 6), damp=st.floats(1e-3, 3.0),
       projected=st.booleans())
def test_held_out_error_is_the_other_folds_output_error_less_a_constant(
        seed: int, n: int, c: int, damp: float, projected: bool) -> None:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(c, n))
    (xf_a, xq_a), (xf_b, xq_b) = rows(rng, 3 * n, n, 0.3), rows(rng, 2 * n + 1, n, 0.3)
    got = held_out_error(w, fold(xf_a, xq_a, w if projected else None), fold(xf_b, xq_b, w if projected else None),
                         damp)
    want = direct_error(w, ridge(w, xf_a, xq_a, damp), xf_b, xq_b) - direct_error(w, 0 * w, xf_b, 0 * xq_b)
    assert got == pytest.approx(want, rel=1e-7, abs=1e-9 * direct_error(w, 0 * w, xf_b, 0 * xq_b))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), noise=st.floats(0.05, 2.0))
def test_choice_is_the_lowest_two_way_held_out_error(seed: int, noise: float) -> None:
    rng = np.random.default_rng(seed)
    n, c = 6, 4
    w = rng.normal(size=(c, n))
    (xf_a, xq_a), (xf_b, xq_b) = rows(rng, 12, n, noise), rows(rng, 12, n, noise)
    damps = (0.003, 0.03, 0.3, 3.0)
    choice = cross_validated_damp(w, (fold(xf_a, xq_a), fold(xf_b, xq_b)), damps)
    direct = [direct_error(w, ridge(w, xf_a, xq_a, d), xf_b, xq_b) + direct_error(w, ridge(w, xf_b, xq_b, d),
                                                                                       xf_a, xq_a) for d in damps]
    assert choice.candidates == damps
    assert choice.damp == damps[int(np.argmin(direct))]
    np.testing.assert_allclose(np.diff(choice.errors), np.diff(direct), rtol=1e-6, atol=1e-9 * max(direct))


def test_few_rows_and_upstream_noise_pick_a_stronger_pull_than_many_clean_rows() -> None:
    """Over-fitting the upstream error of a few noisy rows is what the held-out fold exposes."""
    rng = np.random.default_rng(0)
    n, c = 16, 8
    w = rng.normal(size=(c, n))
    damps = (0.001, 0.01, 0.1, 1.0, 10.0)
    few = cross_validated_damp(w, (fold(*rows(rng, 20, n, 1.0)), fold(*rows(rng, 20, n, 1.0))), damps)
    mix = np.eye(n) + 0.5 * rng.normal(size=(n, n)) / np.sqrt(n)  # a systematic upstream error: x_q = M x_f

    def mixed(m: int) -> TargetFold:
        xf, xq = rows(rng, m, n, 0.01)
        return fold(xf, xq @ mix.T)

    many = cross_validated_damp(w, (mixed(4000), mixed(4000)), damps)
    assert many.damp == damps[0]  # W* = W M^-1 is what the float output needs: the weakest pull
    assert few.damp > many.damp


def test_the_choice_predicts_unseen_rows_better_than_the_weakest_pull() -> None:
    """Few calibration rows with an upstream error: the cross-validated W* beats the fixed smallest damp on a
    third, unseen set of rows, in most of 20 draws (the claim the choice makes)."""
    wins = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        n, c = 12, 6
        w = rng.normal(size=(c, n))
        (xf_a, xq_a), (xf_b, xq_b), (xf_t, xq_t) = (rows(rng, 24, n, 0.7) for _ in range(3))
        choice = cross_validated_damp(w, (fold(xf_a, xq_a), fold(xf_b, xq_b)), (0.01, 0.1, 1.0))
        both_f, both_q = np.vstack([xf_a, xf_b]), np.vstack([xq_a, xq_b])
        chosen = direct_error(w, ridge(w, both_f, both_q, choice.damp), xf_t, xq_t)
        wins += chosen < direct_error(w, ridge(w, both_f, both_q, 0.01), xf_t, xq_t)
    assert wins >= 15, wins


def test_equal_inputs_are_a_tie_won_by_the_first_candidate() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 5))
    xa, xb = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    choice = cross_validated_damp(w, (fold(xa, xa), fold(xb, xb)), (0.01, 0.1, 1.0))  # W* = W for every damp
    assert choice.damp == 0.01


def test_one_candidate_needs_no_folds_and_none_is_an_error() -> None:
    w = np.ones((2, 3))
    empty = TargetFold(np.zeros((0, 0, 0)))
    assert cross_validated_damp(w, (empty, empty), [0.05]).damp == 0.05
    with pytest.raises(ValueError, match="at least one candidate"):
        cross_validated_damp(w, (empty, empty), [])


def test_non_finite_statistics_are_a_clear_error() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(2, 3))
    good = fold(*rows(rng, 9, 3, 0.1))
    bad = TargetFold(good.gram, good.cross * np.nan, None, 9)
    with pytest.raises(ValueError, match="not all finite"):
        cross_validated_damp(w, (good, bad), (0.01, 0.1))


def with_rows(f: TargetFold, xf: np.ndarray, xq: np.ndarray, w: np.ndarray | None = None) -> TargetFold:
    """``f`` with its rows kept: the float inputs (``w is None``) or outputs (``x_f W^T``)."""
    return TargetFold(f.gram, f.cross, f.cross_out, f.rows, xq[None], (xf if w is None else xf @ w.T)[None])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(4, 12), c=st.integers(1, 6), damp=st.floats(1e-3, 3.0),
       projected=st.booleans(), dead=st.booleans(), keep=st.sampled_from(["both", "fit", "score"]))
def test_rows_of_a_rank_deficient_fold_give_the_errors_of_its_statistics(
        seed: int, n: int, c: int, damp: float, projected: bool, dead: bool, keep: str) -> None:
    """Woodbury in the row space (fewer rows than inputs) against the LU solve of the same fold's means."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(c, n))
    (xf_a, xq_a), (xf_b, xq_b) = rows(rng, n // 2 + 1, n, 0.3), rows(rng, n - 1, n, 0.3)
    if dead:  # an input every quantized row has at zero
        xq_a[:, 0], xq_b[:, 0] = 0.0, 0.0
    wp = w if projected else None
    a, b = fold(xf_a, xq_a, wp), fold(xf_b, xq_b, wp)
    ra = with_rows(a, xf_a, xq_a, wp) if keep in ("both", "fit") else a
    rb = with_rows(b, xf_b, xq_b, wp) if keep in ("both", "score") else b
    want = held_out_error(w, a, b, damp)
    scale = direct_error(w, 0 * w, xf_b, 0 * xq_b)
    assert held_out_error(w, ra, rb, damp) == pytest.approx(want, rel=1e-7, abs=1e-9 * scale)
    damps = (0.01, 0.1, 1.0)
    got, ref = cross_validated_damp(w, (ra, rb), damps), cross_validated_damp(w, (a, b), damps)
    np.testing.assert_allclose(got.errors, ref.errors, rtol=1e-7, atol=1e-9 * scale)
