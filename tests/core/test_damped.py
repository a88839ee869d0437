"""``DampedFactor``: one factorisation of ``G + lam I`` shared by the compensated target and the feedback
rounding, against NumPy's dense solve and against each user making its own factor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requant_plugin.core.damped import DampedFactor, live_gram
from requant_plugin.core.output_objective import error_feedback_round
from requant_plugin.core.target import compensated_weight


def gram(seed: int, n: int, dead: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3 * n, n)) * rng.uniform(0.1, 3.0, size=n)
    x[:, :dead] = 0.0  # inputs that are always zero
    return x.T @ x / x.shape[0]


def dense_damped(g: np.ndarray, damp: float) -> np.ndarray:
    """The damped matrix written out: live block + lam I, dead inputs 1 + lam on the diagonal."""
    dead = np.diag(g) <= 0
    lam = damp * float(np.mean(np.diag(g)[~dead]))
    h = g.copy()
    h[dead, :], h[:, dead] = 0.0, 0.0
    h[dead, dead] = 1.0
    return h + lam * np.eye(g.shape[0])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), dead=st.integers(0, 3), damp=st.floats(1e-3, 1.0),
       order=st.sampled_from(["input", "energy"]))
def test_solve_is_the_dense_solve_of_the_damped_matrix(seed: int, n: int, dead: int, damp: float, order: str) -> None:
    dead = min(dead, n - 1)
    g = gram(seed, n, dead)
    fac = DampedFactor.of(g, damp, order)
    rhs = np.random.default_rng(seed + 1).normal(size=(n, 3))
    np.testing.assert_allclose(fac.solve(rhs), np.linalg.solve(dense_damped(g, damp), rhs), rtol=1e-8, atol=1e-10)
    u = fac.upper  # (P^T H P)^-1 = U^T U with U upper triangular
    h_p = dense_damped(g, damp)[np.ix_(fac.perm, fac.perm)]
    np.testing.assert_allclose(u.T @ u @ h_p, np.eye(n), atol=1e-8)
    assert np.allclose(u, np.triu(u))
    if order == "energy":
        assert np.all(np.diff(np.diag(g)[fac.perm]) <= 0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30), dead=st.integers(0, 30))
def test_live_gram_neutralises_dead_inputs_and_leaves_the_input_alone(seed: int, n: int, dead: int) -> None:
    g = gram(seed, n, min(dead, n))
    before = g.copy()
    h, mask, scale = live_gram(g)
    np.testing.assert_array_equal(g, before)
    np.testing.assert_array_equal(mask, np.diag(g) <= 0)
    np.testing.assert_array_equal(h, dense_damped(g, 0.0) if (~mask).any() else np.eye(n))
    assert scale == (float(np.mean(np.diag(g)[~mask])) if (~mask).any() else 1.0)


@pytest.mark.parametrize("order", ["input", "energy"])
def test_the_target_is_the_same_with_a_shared_factor(order: str) -> None:
    g = gram(3, 24, dead=2)
    rng = np.random.default_rng(4)
    w, cross = rng.normal(size=(5, 24)), (g + 0.1 * rng.normal(size=(24, 24)))[None]
    own = compensated_weight(w, g[None], cross)
    shared = compensated_weight(w, g[None], cross, factors=[DampedFactor.of(g, 0.01, order)])
    np.testing.assert_allclose(shared, own, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(own[:, :2], w[:, :2], rtol=1e-12)  # dead inputs keep the float weight


def test_the_feedback_rounding_is_the_same_with_a_shared_factor() -> None:
    g = gram(5, 30, dead=1)
    w = np.random.default_rng(6).normal(size=(7, 30)) * 0.1

    def q(_j: int, v: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(v / 0.05), -8, 7) * 0.05

    own = error_feedback_round(w, g, q, order="energy")
    np.testing.assert_array_equal(error_feedback_round(w, g, q, order="energy",
                                                       factor=DampedFactor.of(g, 0.01, "energy")), own)


def test_a_factor_made_otherwise_is_refused_by_name() -> None:
    g = gram(7, 10)
    w = np.ones((2, 10))
    with pytest.raises(ValueError, match=r"damp=0\.1"):
        error_feedback_round(w, g, lambda _j, v: v, damp=0.01, order="input", factor=DampedFactor.of(g, 0.1, "input"))
    with pytest.raises(ValueError, match="order='energy'"):
        error_feedback_round(w, g, lambda _j, v: v, order="input", factor=DampedFactor.of(g, 0.01, "energy"))
    with pytest.raises(ValueError, match="one DampedFactor per group"):
        compensated_weight(w, g[None], g[None], factors=[])
    with pytest.raises(ValueError, match="unknown order"):
        DampedFactor.of(g, 0.01, "random")
    with pytest.raises(ValueError, match="damp must be finite"):
        DampedFactor.of(g, float("nan"))
