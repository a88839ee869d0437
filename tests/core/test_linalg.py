"""``core.linalg`` against NumPy's general inverse and Cholesky factorisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requant_plugin.core.linalg import lower_triangular_inverse, upper_cholesky_of_inverse


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
