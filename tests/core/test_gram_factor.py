"""``factor_gram`` / ``GramFactor``: the low-rank-plus-diagonal Gram form against the dense
quadratic form ``e^T G e`` computed from explicit rows, and the output objective built on it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requant_plugin.core import Grid, golden_search
from requant_plugin.core.gram_factor import APPROX_MIN_N, factor_gram, pivoted_cholesky
from requant_plugin.core.output_objective import OutputObjective


def gram(seed: int, rows: int, n: int, rank: int | None = None, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if rank is None:
        x = rng.normal(size=(rows, n)) * rng.uniform(0.1, 3.0, size=n)
    else:
        x = rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, n))
    x = x + noise * rng.normal(size=x.shape)
    return x.T @ x / rows


def dense_quad(g: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a @ g, b)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(64, 160), rows=st.integers(1, 15))
def test_rank_deficient_gram_is_factored_exactly(seed: int, n: int, rows: int) -> None:
    g = gram(seed, rows, n)  # rank <= rows < n / 4
    f = factor_gram(g)
    assert f is not None and f.exact and f.rank <= rows
    e = np.random.default_rng(seed + 1).normal(size=(7, n))
    v = np.random.default_rng(seed + 2).normal(size=(7, n))
    np.testing.assert_allclose(f.quad(e, e), dense_quad(g, e, e), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(f.quad(e, v), dense_quad(g, e, v), rtol=1e-8, atol=1e-9 * np.trace(g))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(8, 80), rank=st.integers(1, 8), tail=st.floats(1e-6, 0.5))
def test_pivoted_cholesky_keeps_the_diagonal_and_meets_the_tail(seed: int, n: int, rank: int, tail: float) -> None:
    g = gram(seed, 200, n, rank=rank, noise=0.1)
    out = pivoted_cholesky(g, tail, n)
    assert out is not None
    f, d = out
    assert np.all(d >= 0) and d.sum() <= tail * np.trace(g) * (1 + 1e-9)
    np.testing.assert_allclose(np.einsum("ij,ij->i", f, f) + d, np.diag(g), rtol=1e-9, atol=1e-12)
    # the residual G - F F^T of a partial Cholesky factorisation is positive semi-definite
    assert np.linalg.eigvalsh(g - f @ f.T).min() >= -1e-9 * np.trace(g)


def test_full_rank_narrow_gram_stays_dense() -> None:
    assert factor_gram(gram(0, 2000, 300)) is None  # full rank, n < APPROX_MIN_N: exactness first
    assert factor_gram(gram(0, 5, 32)) is None  # too narrow to gain anything
    assert pivoted_cholesky(gram(0, 2000, 50), 1e-6, 10) is None  # needs more columns than allowed


def test_wide_full_rank_gram_is_approximated_within_its_tail() -> None:
    n = APPROX_MIN_N
    g = gram(3, 3 * n, n, rank=40, noise=0.05)  # full rank, spectrum dominated by 40 directions
    f = factor_gram(g)
    assert f is not None and not f.exact and f.rank < n // 4
    e = np.random.default_rng(4).normal(size=(20, n))
    rel = np.abs(f.quad(e, e) - dense_quad(g, e, e)) / dense_quad(g, e, e)
    assert rel.max() < 1e-2
    same = factor_gram(g, rows=3 * n)  # the early exit for full-rank G keeps a factor that meets the tail
    assert same is not None and np.array_equal(same.factor, f.factor)


@pytest.mark.parametrize("n", [300, APPROX_MIN_N])
def test_full_rank_gram_gives_up_early_with_the_same_answer(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    g = gram(5, 2 * n, n)  # full rank, flat spectrum: no factor within n / 4 columns
    calls: list[int] = []  # one pivot (argmax of the residual diagonal) per column
    orig = np.argmax
    monkeypatch.setattr(np, "argmax", lambda a: calls.append(1) or orig(a))
    assert factor_gram(g, rows=2 * n) is None
    early = len(calls)
    assert factor_gram(g) is None
    monkeypatch.undo()
    assert early <= n // 16 and len(calls) - early == n // 4  # stops at the first check, not at max_rank
    # rank-deficient G (fewer rows than inputs) is never cut short: its residual falls off a cliff
    assert factor_gram(gram(6, 40, n), rows=40) is not None
    dead = gram(7, 2 * n, n)
    dead[n // 8:, :] = dead[:, n // 8:] = 0.0  # 7/8 of the inputs never fire: the live block fits in n / 4
    assert factor_gram(dead, rows=2 * n) is not None


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_objective_and_search_agree_with_the_dense_gram(bits: int) -> None:
    rng = np.random.default_rng(bits)
    n, c = 96, 12
    g = gram(bits, 10, n)  # ten calibration rows: rank 10
    w = rng.normal(size=(c, n)) * 0.1
    grid = Grid.from_bits(bits)
    f = factor_gram(g)
    assert f is not None and f.exact
    dense, fact = OutputObjective(w, g, grid), OutputObjective(w, g, grid, factor=f)
    alpha = rng.uniform(0.05, 1.0, size=(c, 9))
    # the factored objective computes in float32 (errors and products): about 1e-5 relative at 8 bits
    np.testing.assert_allclose(fact(alpha), dense(alpha), rtol=3e-5, atol=1e-12)
    a, b = golden_search(dense), golden_search(fact)
    np.testing.assert_allclose(b.mse, a.mse, rtol=3e-5, atol=1e-15)


def test_factor_must_match_the_gram() -> None:
    g = gram(0, 10, 96)
    f = factor_gram(g)
    assert f is not None
    with pytest.raises(ValueError, match="factor must factor one"):
        OutputObjective(np.ones((4, 64)), gram(0, 10, 64), Grid.from_bits(4), factor=f)
