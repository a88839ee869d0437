"""``core.linalg`` against NumPy's general inverse and Cholesky factorisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requant_plugin.core.linalg import CholeskyQuad, lower_triangular_inverse, upper_cholesky_of_inverse


def _spd(n: int, seed: int, damp: float = 1e-2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 3, n)) * rng.uniform(0.01, 3.0, size=n)
    return x.T @ x / (n + 3) + damp * np.eye(n)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 400), seed=st.integers(0, 2**16))
def test_upper_factor_of_the_inverse_matches_inverse_then_cholesky(n: int, seed: int) -> None:
    h = _spd(n, seed)
    u = upper_cholesky_of_inverse(h)
    expect = np.linalg.cholesky(np.linalg.inv(h)).T
    assert np.array_equal(u, np.triu(u)) and np.all(np.diag(u) > 0)
    np.testing.assert_allclose(u, expect, rtol=0, atol=1e-9 * np.abs(expect).max())
    np.testing.assert_allclose(u.T @ u @ h, np.eye(n), rtol=0, atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 600), seed=st.integers(0, 2**16))
def test_lower_triangular_inverse_is_lower_and_inverts(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lower = np.tril(rng.standard_normal((n, n)) * 0.1) + np.diag(rng.uniform(0.5, 2.0, n))
    inv = lower_triangular_inverse(lower)
    assert np.array_equal(inv, np.tril(inv))
    np.testing.assert_allclose(inv @ lower, np.eye(n), rtol=0, atol=1e-9)


def test_an_indefinite_matrix_raises_linalg_error() -> None:
    h = _spd(50, 0)
    h[10, 10] = -1.0
    with pytest.raises(np.linalg.LinAlgError):
        upper_cholesky_of_inverse(h)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), m=st.integers(1, 20), dead=st.integers(0, 5), blocks=st.integers(1, 9),
       seed=st.integers(0, 2**16))
def test_cholesky_quad_matches_the_dense_quadratic_form(n: int, m: int, dead: int, blocks: int, seed: int) -> None:
    g = _spd(n, seed)
    gone = np.random.default_rng(seed).permutation(n)[:min(dead, n - 1)]
    g[gone, :], g[:, gone] = 0.0, 0.0  # inputs that are always zero: no row or column in G
    cq = CholeskyQuad.of(g)
    assert cq is not None
    cq = CholeskyQuad(cq.lower, cq.live, blocks)
    x = np.random.default_rng(seed + 1).standard_normal((m, n))
    expect = np.einsum("ij,jk,ik->i", x, g, x)
    np.testing.assert_allclose(cq(x), expect, rtol=1e-10, atol=1e-12 * np.abs(expect).max())


def test_cholesky_quad_refuses_a_rank_deficient_gram() -> None:
    x = np.random.default_rng(0).standard_normal((5, 40))
    assert CholeskyQuad.of(x.T @ x) is None  # rank 5 < 40: the caller keeps the dense product
    assert CholeskyQuad.of(np.zeros((3, 3))) is None


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 300), m=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_single_precision_quad_is_within_float32_rounding(n: int, m: int, seed: int) -> None:
    g = _spd(n, seed)
    cq = CholeskyQuad.of(g, single=True)
    assert cq is not None and cq.lower.dtype == np.float32
    x = np.random.default_rng(seed + 1).standard_normal((m, n))
    got = cq(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.einsum("ij,jk,ik->i", x, g, x), rtol=1e-4)
