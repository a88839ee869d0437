"""A low-rank-plus-diagonal form of an input Gram matrix, for cheap output-error evaluations.

``G ~= F F^T + diag(d)``: ``F`` (``n x k``) from a diagonally pivoted partial Cholesky
factorisation of ``G`` stopped once the residual trace ``sum(d)`` is at most ``tail * tr(G)``,
and ``d = diag(G - F F^T) >= 0`` (the residual's diagonal; its off-diagonal part is dropped).
Then ``e^T G e ~= ||F^T e||^2 + sum(d e^2)`` costs ``n (k + 1)`` instead of ``n^2`` per row.

When ``G`` has rank ``r < n`` (fewer calibration rows than inputs: transformer layers, large
convolutions with few images) the factorisation ends at ``k = r`` with ``d ~= 0`` and is exact.
A full-rank ``G`` is factored only when its residual trace falls below ``tail`` within
``max_fraction * n`` columns; otherwise :func:`factor_gram` returns ``None`` and callers use
``G`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

#: residual trace (relative to tr G) below which the dropped part counts as exact
EXACT_TAIL = 1e-10
#: residual trace (relative) accepted for large full-rank Gram matrices (``n >= APPROX_MIN_N``)
APPROX_TAIL = 1e-3
#: only inputs this wide are approximated when ``G`` is full rank (smaller ones stay exact)
APPROX_MIN_N = 2048
#: a factor wider than this fraction of ``n`` saves too little: ``G`` itself is used
MAX_FRACTION = 0.25
#: below this width the dense product is as cheap as anything else
MIN_N = 64


@dataclass(frozen=True)
class GramFactor:
    """``G ~= factor @ factor.T + diag(diag)``; ``exact`` when the dropped trace is negligible."""

    factor: NDArray[np.float64]
    diag: NDArray[np.float64]
    exact: bool

    @property
    def rank(self) -> int:
        """Columns of the factor."""
        return int(self.factor.shape[1])

    @cached_property
    def _single(self) -> NDArray[np.float32]:
        return self.factor.astype(np.float32)

    def quad(self, a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
        """Row-wise ``a_i^T G b_i`` in the factored form, for ``a``, ``b`` of shape ``(m, n)`` (float32
        rows: float32 products, summed in float64)."""
        f = self._single if a.dtype == np.float32 and b.dtype == np.float32 else self.factor
        fa = a @ f
        fb = fa if b is a else b @ f
        return np.asarray(np.einsum("ij,ij->i", fa, fb, dtype=np.float64) + (a * b) @ self.diag)


def pivoted_cholesky(
    gram: NDArray[np.floating], tail: float, max_rank: int, *, full_rank: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """``(F, d)`` with ``G - F F^T`` having diagonal ``d`` and ``sum(d) <= tail * tr(G)``, from a
    partial Cholesky factorisation with the largest remaining diagonal as pivot; ``None`` if that
    needs more than ``max_rank`` columns. ``G`` must be symmetric positive semi-definite.

    ``full_rank``: ``G`` has no rank cliff (it was accumulated from at least ``n`` rows; inputs with
    ``G_jj = 0`` aside), so the search gives up early once the relative residual ``r_k`` after
    ``k >= max_rank / 4`` columns, extrapolated geometrically (``r_k ** (max_rank / k)``, optimistic for
    a spectrum whose decay slows down), still misses ``tail`` (checked every ``max_rank / 8`` columns)."""
    g = np.asarray(gram, dtype=np.float64)
    n = g.shape[0]
    d = np.clip(np.diag(g).copy(), 0.0, None)
    total = float(d.sum())
    ft = np.zeros((max(0, min(max_rank, n)), n))  # the factor's columns, stored as rows
    if total <= 0.0:
        return ft[:0].T.copy(), d
    goal = tail * total
    every = max(1, ft.shape[0] // 8)
    full_rank = full_rank and np.count_nonzero(d) > ft.shape[0]  # else the live inputs fit: exact at their count
    k = 0
    while (left := float(d.sum())) > goal:
        if k == ft.shape[0]:
            return None
        if full_rank and k >= 2 * every and k % every == 0 and (left / total) ** (ft.shape[0] / k) > tail:
            return None
        p = int(np.argmax(d))
        col = (g[p] - ft[:k, p] @ ft[:k]) / np.sqrt(d[p])  # column p of G - F F^T (G is symmetric)
        ft[k] = col
        d = np.clip(d - col * col, 0.0, None)
        d[p] = 0.0
        k += 1
    return ft[:k].T.copy(), d


def factor_gram(
    gram: NDArray[np.floating], *, approx_tail: float = APPROX_TAIL, approx_min_n: int = APPROX_MIN_N,
    max_fraction: float = MAX_FRACTION, rows: int | None = None,
) -> GramFactor | None:
    """The factored form of ``gram`` (``n x n``) when it saves work, else ``None``.

    Exact (``tail`` :data:`EXACT_TAIL`) for rank-deficient ``G`` of any width >= :data:`MIN_N`;
    approximate (``approx_tail``) for full-rank ``G`` of width >= ``approx_min_n``. Either only
    when at most ``max_fraction * n`` columns are needed. ``rows``: how many rows ``G`` was
    accumulated from; at least ``n`` lets the factorisation give up early
    (:func:`pivoted_cholesky`'s ``full_rank``).
    """
    g = np.asarray(gram, dtype=np.float64)
    n = g.shape[0]
    if g.ndim != 2 or g.shape != (n, n) or n < MIN_N:
        return None
    max_rank = int(max_fraction * n)
    tail = approx_tail if n >= approx_min_n else EXACT_TAIL
    out = pivoted_cholesky(g, tail, max_rank, full_rank=rows is not None and rows >= n)
    if out is None:
        return None
    f, d = out
    exact = float(d.sum()) <= EXACT_TAIL * max(float(np.trace(g)), np.finfo(float).tiny)
    return GramFactor(f, d, exact)
