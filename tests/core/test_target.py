"""``compensated_weight``: the least-squares weight that matches the float output from quantized
inputs, against NumPy's ``lstsq`` on explicit rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requant_plugin.core.target import compensated_weight


def rows(seed: int, m: int, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xf = rng.normal(size=(m, n)) * rng.uniform(0.1, 3.0, size=n)
    return xf, xf + noise * rng.normal(size=(m, n))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), c=st.integers(1, 6), noise=st.floats(0.0, 1.0))
def test_undamped_is_the_least_squares_solution(seed: int, n: int, c: int, noise: float) -> None:
    xf, xq = rows(seed, 400, n, noise)
    w = np.random.default_rng(seed + 1).normal(size=(c, n))
    h, cross = (xq.T @ xq / 400)[None], (xq.T @ xf / 400)[None]
    got = compensated_weight(w, h, cross, damp=0.0)
    want = np.linalg.lstsq(xq, xf @ w.T, rcond=None)[0].T  # argmin_V ||X_f W^T - X_q V^T||
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 8), damp=st.floats(0.0, 10.0))
def test_damped_is_the_ridge_towards_the_float_weight(seed: int, n: int, damp: float) -> None:
    xf, xq = rows(seed, 300, n, 0.5)
    w = np.random.default_rng(seed + 2).normal(size=(3, n))
    h, cross = xq.T @ xq / 300, xq.T @ xf / 300
    lam = damp * float(np.mean(np.diag(h)))
    got = compensated_weight(w, h[None], cross[None], damp=damp)
    # stationary point of E||W x_f - V x_q||^2 + lam ||V - W||^2: V (H + lam I) = W (C^T + lam I)
    np.testing.assert_allclose(got @ (h + lam * np.eye(n)), w @ (cross.T + lam * np.eye(n)), rtol=1e-7, atol=1e-9)


def test_same_inputs_and_a_huge_pull_give_back_the_float_weight() -> None:
    xf, _ = rows(3, 500, 5, 0.0)
    w = np.random.default_rng(0).normal(size=(4, 5))
    h = (xf.T @ xf / 500)[None]
    np.testing.assert_allclose(compensated_weight(w, h, h, damp=0.0), w, rtol=1e-9, atol=1e-12)
    xq = xf + np.random.default_rng(1).normal(size=xf.shape)
    far = compensated_weight(w, (xq.T @ xq / 500)[None], (xq.T @ xf / 500)[None], damp=1e9)
    np.testing.assert_allclose(far, w, rtol=1e-6, atol=1e-8)


def test_groups_and_dead_inputs() -> None:
    xf, xq = rows(5, 300, 4, 0.3)
    xq[:, 2] = 0.0  # an input the quantized model never feeds: its weight stays the float one
    w = np.random.default_rng(4).normal(size=(6, 4))
    h, cross = xq.T @ xq / 300, xq.T @ xf / 300
    got = compensated_weight(w, np.stack([h, h]), np.stack([cross, cross]), damp=0.0)
    np.testing.assert_allclose(got[:, 2], w[:, 2])
    one = compensated_weight(w[:3], h[None], cross[None], damp=0.0)  # groups are independent
    np.testing.assert_allclose(got[:3], one)
    assert np.all(np.isfinite(got))


def test_bad_shapes_and_damping_are_clear_errors() -> None:
    h = np.eye(3)[None]
    with pytest.raises(ValueError, match=r"weight must be \(C, 3\)"):
        compensated_weight(np.ones((2, 4)), h, h)
    with pytest.raises(ValueError, match="multiple of 2 groups"):
        compensated_weight(np.ones((3, 3)), np.stack([h[0], h[0]]), np.stack([h[0], h[0]]))
    with pytest.raises(ValueError, match=r"\(groups, n, n\)"):
        compensated_weight(np.ones((2, 3)), h, np.eye(3))
    with pytest.raises(ValueError, match="damp"):
        compensated_weight(np.ones((2, 3)), h, h, damp=-1.0)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 10), per=st.integers(1, 4), dead=st.booleans(),
       damp=st.floats(0.0, 1.0))
def test_projected_cross_gives_the_same_target(seed: int, n: int, per: int, dead: bool, damp: float) -> None:
    xf, xq = rows(seed, 300, n, 0.4)
    if dead:
        xq[:, 0] = 0.0
    w = np.random.default_rng(seed + 3).normal(size=(2 * per, n))
    h, cross = xq.T @ xq / 300, xq.T @ xf / 300
    full = compensated_weight(w, np.stack([h, h]), np.stack([cross, cross]), damp=damp)
    out = np.stack([xq.T @ (xf @ w[i * per:(i + 1) * per].T) / 300 for i in range(2)])  # E[x_q y_f^T] per group
    got = compensated_weight(w, np.stack([h, h]), damp=damp, cross_out=out)
    np.testing.assert_allclose(got, full, rtol=1e-7, atol=1e-9)


def test_cross_forms_are_exclusive_and_shaped() -> None:
    h = np.eye(3)[None]
    with pytest.raises(ValueError, match="exactly one"):
        compensated_weight(np.ones((2, 3)), h)
    with pytest.raises(ValueError, match="exactly one"):
        compensated_weight(np.ones((2, 3)), h, h, cross_out=np.ones((1, 3, 2)))
    with pytest.raises(ValueError, match=r"cross_out must be \(1, 3, 2\)"):
        compensated_weight(np.ones((2, 3)), h, cross_out=np.ones((1, 3, 3)))
