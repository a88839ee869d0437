"""Exact, cheap evaluation of the range objective ``L(alpha)`` (pure NumPy).

For one row (a tensor or one channel) with values ``w`` and a grid with base scale ``s1`` and
zero point ``z``, the candidate ``alpha`` quantizes ``y = T(w)`` with scale ``s = alpha * s1``:
code ``k`` holds every ``w`` whose ``y`` rounds to ``k``, i.e. ``w`` between the thresholds
``T^-1(s * (k - z -+ 1/2))`` (the lowest and highest codes also take everything clamped into
them), and represents it by the level ``v_k``: ``T^-1(s * (k - z))`` when the loss is measured
in the original space, ``s * (k - z)`` in the transformed space. Hence

    L(alpha) = (1 / N) * sum_k [ S2_k - 2 v_k S1_k + v_k**2 n_k ]

where ``n_k``, ``S1_k`` and ``S2_k`` are the count, sum and sum of squares (in the loss space)
of the values in code ``k``. With the values sorted once and their prefix sums stored, each
evaluation is ``2**b`` binary searches: ``O(2**b log n)`` instead of an ``O(n)`` fake-quant
pass, and exact up to float64 rounding. Weighted points (a histogram's bins, each with its
count, sum and sum of squares) use the same machinery, so activations and weights share it.

Because ``v_k(alpha) = alpha**e * c_k`` (``e = 1/p`` in the original space, ``1`` otherwise),
the best ``alpha`` for a fixed code assignment is closed form:
``alpha**e = sum_k c_k S1_k / sum_k c_k**2 n_k`` (used by :meth:`refit`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..options import LossSpace as LossSpaceChoice
from .breakpoints import band_keys, breakpoints_between, near_breakpoints, row_bands, select_near
from .direct import direct_is_cheaper, fake_quant_sse_bias
from .grid import Grid
from .transform import PowerTransform

#: The loss-space names as a typing alias (validation: :class:`~requant_plugin.options.LossSpace`).
LossSpace = Literal["original", "transformed"]
_CHUNK = 1 << 22  # max rows * candidates * levels handled at once
_BLOCK = 64  # block length of the blocked prefix sums
_BLOCKED_MIN = 1 << 16  # single rows longer than this use blocked prefix sums


def _prefix(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-wise prefix sums with a leading zero column, in float64."""
    out = np.zeros((x.shape[0], x.shape[1] + 1))
    np.cumsum(x, axis=1, dtype=np.float64, out=out[:, 1:])
    return out


@dataclass(frozen=True)
class PointMoments:
    """Weighted points (a histogram's bins), each ``(R, n)`` in the ORIGINAL space: per point the
    count ``n_i``, the sum ``S1_i`` and the sum of squares ``S2_i`` of the values it stands for."""

    count: NDArray[np.float64]
    sum1: NDArray[np.float64]
    sum2: NDArray[np.float64]


@dataclass(frozen=True)
class Codes:
    """Per-code statistics of one batch of candidates: shapes ``(R, K, levels)``."""

    count: NDArray[np.float64]
    sum1: NDArray[np.float64]
    sum2: NDArray[np.float64]
    level_coef: NDArray[np.float64]  # c_k: level = alpha**e * c_k
    thresholds: NDArray[np.float64]  # (R, K, levels - 1): rounding thresholds, original space
    split: NDArray[np.intp]  # (R, K, levels - 1): values at sorted positions >= split go above


def code_sse(codes: Codes, levels: NDArray[np.float64]) -> NDArray[np.float64]:
    """Weighted sum of squared errors per row and candidate, ``(R, K)``, from the per-code
    statistics: ``sum_k (S2_k - 2 v_k S1_k + v_k**2 n_k)`` (clamped at 0 against round-off)."""
    sse = np.sum(codes.sum2 - 2.0 * levels * codes.sum1 + levels * levels * codes.count, axis=2)
    return np.maximum(sse, 0.0)


def all_rows_then_select(
    fn: Callable[[NDArray[np.float64]], NDArray[np.float64]], n_rows: int, alpha: NDArray[np.float64],
    rows: NDArray[np.intp],
) -> NDArray[np.float64]:
    """``fn`` of all ``n_rows`` rows (``alpha = 1`` outside ``rows``), then the rows ``rows``: the
    fallback of ``rows_call`` where rows cannot be evaluated on their own."""
    full = np.ones((n_rows, alpha.shape[1]))
    full[rows] = alpha
    return fn(full)[rows]


class RangeObjective:
    """``L(alpha)`` for ``R`` rows at once.

    Args:
        values: ``(R, n)`` values sorted ascending along axis 1 (raw weights, or a histogram's
            bin means).
        grid: the integer grid.
        transform: the transform (identity for ``space="uniform"``).
        lo, hi: per-row data range ``(R,)`` in the transformed space, fixing ``s1`` and ``z``.
        loss_space: measure the error in the ``"original"`` or the ``"transformed"`` space.
        moments: for weighted points (histograms) their :class:`PointMoments`; ``None`` for raw
            values (weight 1 each).
    """

    def __init__(
        self,
        values: NDArray[np.floating],
        grid: Grid,
        transform: PowerTransform,
        lo: NDArray[np.float64],
        hi: NDArray[np.float64],
        loss_space: str = "original",
        *,
        moments: PointMoments | None = None,
    ) -> None:
        loss_space = LossSpaceChoice.parse(loss_space, "loss space").value
        if values.ndim != 2:
            raise ValueError("values must be 2-D (rows, n)")
        self.grid, self.transform, self.loss_space = grid, transform, loss_space
        self.rows, self.n = values.shape
        self.s1, self.z = grid.base_qparams(lo, hi)
        self.exponent = 1.0 if (loss_space == "transformed" or transform.is_identity) else 1.0 / transform.p
        self._values = values
        self._build_keys(values)
        self._build_prefix(values, moments)
        k = np.arange(grid.quant_min, grid.quant_max + 1, dtype=np.float64)
        self._a = k[None, :] - self.z[:, None]  # (R, L): k - z
        self._half = self._a[:, :-1] + 0.5  # rounding thresholds in units of the scale
        self._lower_even = (self._a[:, :-1] % 2) == 0
        level_y1 = self.s1[:, None] * self._a  # levels at alpha = 1 in the transformed space
        # c_k: level(alpha) = alpha**exponent * c_k in the loss space
        self._coef = level_y1 if self.exponent == 1.0 else self.transform.inverse(level_y1)
        self.evaluations = 0
        # short raw rows: direct fake quantization is cheaper than 2**b binary searches per row
        self._direct = moments is None and not self._blocked and direct_is_cheaper(self.n, grid.levels)
        if self._direct:
            self._x = self.transformed if loss_space == "transformed" else values.astype(np.float64)

    def _build_keys(self, values: NDArray[np.floating]) -> None:
        if self.rows == 1:
            self._keys = np.ascontiguousarray(values[0])
            self._vmin = self._span = None
            return
        v = values.astype(np.float64)
        self._vmin, self._span, _ = row_bands(v)
        self._keys = band_keys(v)

    def _build_prefix(self, values: NDArray[np.floating], moments: PointMoments | None) -> None:
        """Prefix sums of weight, x and x**2 (x in the loss space), in float64.

        A large single row uses block prefix sums (blocks of ``_BLOCK`` values plus a partial
        sum inside the block at query time), which avoids two sequential O(n) cumsums.
        """
        self._blocked = False
        if moments is None:
            self._p0 = None  # the count below index i is i itself
            v = values.astype(np.float64)
            x = self.transform.forward(v) if self.loss_space == "transformed" else v
            self.total_weight = np.full(self.rows, float(self.n))
            if self.rows == 1 and self.n > _BLOCKED_MIN:
                nb = -(-self.n // _BLOCK)
                d = np.zeros((1, nb * _BLOCK))
                d[:, : self.n] = x
                self._data = d.reshape(1, nb, _BLOCK)
                self._p1 = _prefix(np.einsum("rbk->rb", self._data))
                self._p2 = _prefix(np.einsum("rbk,rbk->rb", self._data, self._data))
                self._blocked = True
            else:
                self._p1, self._p2 = _prefix(x), _prefix(x * x)
            return
        w0 = moments.count.astype(np.float64)
        if self.loss_space == "transformed" and not self.transform.is_identity:
            y = self.transform.forward(values.astype(np.float64))  # bin mean stands for its members
            w1, w2 = w0 * y, w0 * y * y
        else:
            w1, w2 = moments.sum1.astype(np.float64), moments.sum2.astype(np.float64)
        self._p0, self._p1, self._p2 = _prefix(w0), _prefix(w1), _prefix(w2)
        total = self._p0[:, -1]
        self.total_weight = np.where(total > 0, total, 1.0)

    def _gather(
        self, bounds: NDArray[np.intp], rows: NDArray[np.intp] | None = None, squares: bool = True,
    ) -> tuple[NDArray[np.float64], ...]:
        """Prefix sums (count, x[, x**2]) at positions ``bounds`` ``(R', M)`` of ``rows`` (default all)."""

        def take(p: NDArray[np.float64]) -> NDArray[np.float64]:
            return np.take_along_axis(p if rows is None else p[rows], bounds, 1)

        p0 = bounds.astype(np.float64) if self._p0 is None else take(self._p0)
        if not self._blocked:
            return (p0, take(self._p1), take(self._p2)) if squares else (p0, take(self._p1))
        nb = self._data.shape[1]
        j = np.minimum(bounds // _BLOCK, nb - 1)
        rem = bounds - _BLOCK * j
        blk = self._data[0][j[0]]  # (M, _BLOCK)
        mask = np.arange(_BLOCK)[None, :] < rem[0][:, None]
        part = np.where(mask, blk, 0.0)
        p1 = self._p1[0][j[0]] + part.sum(axis=1)
        if not squares:
            return p0, p1[None, :]
        p2 = self._p2[0][j[0]] + np.einsum("mk,mk->m", part, part)
        return p0, p1[None, :], p2[None, :]

    def _thresholds_to_keys(self, thr: NDArray[np.float64], rows: NDArray[np.intp] | None = None,
                            ) -> NDArray[np.floating]:
        """Map thresholds ``(R', ..., ...)`` in the original space (of ``rows``, default all) to flat key space."""
        if self._vmin is None:
            return thr.astype(self._keys.dtype, copy=False)
        assert self._span is not None
        sel = slice(None) if rows is None else rows
        u = (thr - self._vmin[sel][:, :, None]) / self._span[sel][:, :, None]
        u = np.clip(u, -1.0, 2.0, out=u)
        r = np.arange(self.rows) if rows is None else rows
        return np.add(u, (3.0 * r.astype(np.float64))[:, None, None], out=u)

    def _splits(
        self, alpha: NDArray[np.float64], rows: NDArray[np.intp] | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
        """Rounding thresholds (original space) and split positions ``(R', K, L-1)`` of ``rows``
        (default all): values at sorted positions ``>= split[k]`` go above threshold ``k``."""
        sel = slice(None) if rows is None else rows
        s = alpha * self.s1[sel][:, None]  # (R', K)
        # laid out (R', L-1, K): each threshold's keys are monotone in a sorted alpha, which keeps
        # the binary searches of consecutive keys on nearby (cached) entries
        thr_w = self.transform.inverse_rows(self._half[sel][:, :, None] * s[:, None, :], rows)
        keys = self._thresholds_to_keys(thr_w, rows)
        # Values exactly on a threshold round half to even: to code k when k - z is even.
        idx = np.searchsorted(self._keys, keys, side="left")
        hit = self._keys[np.minimum(idx, self._keys.size - 1)] == keys
        if hit.any():
            tie = hit & self._lower_even[sel][:, :, None] & (idx < self._keys.size)
            idx[tie] = np.searchsorted(self._keys, keys[tie], side="right")
        if self.rows > 1:
            r = np.arange(self.rows) if rows is None else rows
            idx -= (r * self.n)[:, None, None]
        np.clip(idx, 0, self.n, out=idx)
        return thr_w.transpose(0, 2, 1), idx.transpose(0, 2, 1)

    def codes(self, alpha: NDArray[np.float64]) -> Codes:
        """Per-code count and sums for candidates ``alpha`` of shape ``(R, K)``."""
        alpha = np.asarray(alpha, dtype=np.float64)
        r_, k_ = alpha.shape
        thr_w, split = self._splits(alpha)
        bounds = np.concatenate([np.zeros((r_, k_, 1), np.intp), split, np.full((r_, k_, 1), self.n)], axis=2)
        g = [x.reshape(r_, k_, -1) for x in self._gather(bounds.reshape(r_, -1))]
        self.evaluations += k_
        coef = np.broadcast_to(self._coef[:, None, :], (r_, k_, self._coef.shape[1]))
        p0, p1, p2 = (x[:, :, 1:] - x[:, :, :-1] for x in g)
        return Codes(p0, p1, p2, coef, thr_w, split)

    def levels(self, alpha: NDArray[np.float64], codes: Codes) -> NDArray[np.float64]:
        """The grid levels ``v_k = alpha**exponent * c_k`` in the loss space, ``(R, K, L)``."""
        return (alpha ** self.exponent)[:, :, None] * codes.level_coef

    def _mse_chunk(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        if self._p0 is not None:  # weighted points: per code, as histogram subclasses do (bit for bit)
            c = self.codes(alpha)
            return code_sse(c, self.levels(alpha, c)) / self.total_weight[:, None]
        return self._mse_rows(alpha, None)

    def _mse_rows(self, alpha: NDArray[np.float64], rows: NDArray[np.intp] | None) -> NDArray[np.float64]:
        """``L`` of raw values by summation by parts (:meth:`sse_bias_rows`)."""
        sse, _ = self.sse_bias_rows(alpha, rows)
        sel = slice(None) if rows is None else rows
        return np.maximum(sse, 0.0) / self.total_weight[sel][:, None]

    def sse_bias_rows(
        self, alpha: NDArray[np.float64], rows: NDArray[np.intp] | None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Raw values: ``SSE = sum_i d_i**2`` and ``bias = sum_i d_i`` (``d = level - x``), ``(R', K)``.

        By parts, ``sum_k c_k (P[b_k+1] - P[b_k]) = c_last P[n] + sum_k P[b_k] (c_k-1 - c_k)`` over
        the splits ``b_k``, so only ``L - 1`` prefix sums per candidate are gathered:
        ``SSE = A - 2 a**e B + a**2e C`` and ``bias = a**e D - P1[n]``."""
        if self._p0 is not None:
            raise ValueError("sse_bias_rows needs raw values (weighted points go through codes())")
        sel = slice(None) if rows is None else rows
        if self._direct:
            self.evaluations += alpha.shape[1]
            return fake_quant_sse_bias(self.transformed[sel], self._x[sel], self.s1[sel], self._a[sel, 0],
                                       self._coef[sel], alpha, self.exponent)
        _, split = self._splits(alpha, rows)
        self.evaluations += alpha.shape[1]
        r_, k_, w_ = split.shape
        p0, p1 = self._gather(split.reshape(r_, -1), rows, squares=False)[:2]
        p0 = p0.reshape(r_, k_, w_)
        coef = self._coef[sel]
        dc, dc2 = coef[:, :-1] - coef[:, 1:], coef[:, :-1] ** 2 - coef[:, 1:] ** 2
        total1 = self._p1[sel][:, -1:]
        b = np.einsum("rkl,rl->rk", p1.reshape(r_, k_, w_), dc) + coef[:, -1:] * total1
        c = np.einsum("rkl,rl->rk", p0, dc2) + coef[:, -1:] ** 2 * float(self.n)
        d = np.einsum("rkl,rl->rk", p0, dc) + coef[:, -1:] * float(self.n)
        ae = alpha ** self.exponent
        return self._p2[sel][:, -1:] - 2.0 * ae * b + ae * ae * c, ae * d - total1

    values = property(lambda self: self._values, doc="The sorted values ``(R, n)`` (raw, or bin means).")
    half = property(lambda self: self._half, doc="Rounding thresholds ``k - z + 1/2`` (scale units), ``(R, L-1)``.")

    @functools.cached_property
    def transformed(self) -> NDArray[np.float64]:
        """``T(values)`` in float64, ``(R, n)`` (computed once)."""
        return self.transform.forward(self._values.astype(np.float64, copy=False))

    @functools.cached_property
    def transformed_keys(self) -> NDArray[np.float64]:
        """:attr:`transformed` as one flat ascending key array (:func:`~.breakpoints.band_keys`)."""
        return band_keys(self.transformed)

    @property
    def by_parts(self) -> bool:
        """Whether :meth:`sse_bias_rows` evaluates rows on their own: raw values (not weighted points
        such as histogram bins) and this class's own loss (subclasses may redefine it)."""
        return type(self)._mse_chunk is RangeObjective._mse_chunk and self._p0 is None

    def rows_in_blocks(
        self, alpha: NDArray[np.float64], rows: NDArray[np.intp],
        fn: Callable[[NDArray[np.float64], NDArray[np.intp]], NDArray[np.float64]],
    ) -> NDArray[np.float64]:
        """``fn(alpha block, rows)`` over column blocks of ``alpha`` (``(len(rows), K)``) sized so that
        one block's gathered arrays stay within :data:`_CHUNK` elements; concatenated."""
        step = max(1, _CHUNK // max(1, rows.size * self._row_cost))
        return np.concatenate([fn(np.ascontiguousarray(alpha[:, i:i + step], dtype=np.float64), rows)
                               for i in range(0, alpha.shape[1], step)], axis=1)

    @property
    def _row_cost(self) -> int:
        if self._direct:
            return max(self.grid.levels, self.n)
        return self.grid.levels * (_BLOCK if self._blocked else 1)

    def chunked(self, alpha: NDArray[np.float64],
                fn: Callable[[NDArray[np.float64]], NDArray[np.float64]]) -> NDArray[np.float64]:
        """``fn`` over column blocks of ``alpha`` (``(R, K)``, or ``(K,)`` for every row) sized so
        that one block's per-code arrays stay within :data:`_CHUNK` elements; concatenated."""
        alpha = np.asarray(alpha, dtype=np.float64)
        if alpha.ndim == 1:
            alpha = np.broadcast_to(alpha[None, :], (self.rows, alpha.shape[0]))
        per = self.rows * self._row_cost
        step = max(1, _CHUNK // max(1, per))
        return np.concatenate([fn(alpha[:, i:i + step]) for i in range(0, alpha.shape[1], step)], axis=1)

    def __call__(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        """``L(alpha)`` for ``alpha`` of shape ``(R, K)``; returns ``(R, K)``."""
        return self.chunked(alpha, self._mse_chunk)

    def rows_call(self, alpha: NDArray[np.float64], rows: NDArray[np.intp]) -> NDArray[np.float64]:
        """``L`` of the rows ``rows`` only, ``alpha`` of shape ``(len(rows), K)`` (counted as ``K``)."""
        if not self.by_parts:
            return all_rows_then_select(self, self.rows, alpha, rows)
        return self.rows_in_blocks(alpha, rows, self._mse_rows)

    def breakpoints(self, max_points: int) -> NDArray[np.float64] | None:
        """The ``alpha`` in (0, 1] at which some value changes code, ``(R, n * (L - 1))`` (NaN
        where none), or ``None`` when that is more than ``max_points`` per row.

        Value ``y = T(x)`` crosses the rounding threshold ``(k - z + 1/2) * s`` at
        ``alpha = y / ((k - z + 1/2) * s1)``; between two such points the code assignment is
        fixed and ``L`` is smooth, so on short rows (a jagged, sawtooth-like ``L``) the search
        also evaluates both sides of every one of them.
        """
        if self.n * self._half.shape[1] > max_points:
            return None
        y = self.transformed
        with np.errstate(divide="ignore", invalid="ignore"):
            a = y[:, :, None] / (self.s1[:, None, None] * self._half[:, None, :])
        a = np.where((a > 0) & (a <= 1), a, np.nan)
        return a.reshape(self.rows, -1)

    def breakpoints_between(
        self, lo: NDArray[np.float64], hi: NDArray[np.float64],
    ) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
        """The :meth:`breakpoints` ``a`` with ``lo[r] <= a <= hi[r]`` and ``0 < a <= 1`` as flat
        ``(row, threshold, value index, a)`` arrays (:func:`~.breakpoints.breakpoints_between`)."""
        return breakpoints_between(self, lo, hi)

    def near_breakpoints(
        self, center: NDArray[np.float64], window: float, max_points: int, limit: int,
    ) -> NDArray[np.float64] | None:
        """The :meth:`breakpoints` ``a`` with ``|a - center| <= window * center`` per row, the first
        ``limit`` in column order, NaN-padded (:func:`~.breakpoints.near_breakpoints`)."""
        if type(self).breakpoints is not RangeObjective.breakpoints:  # a subclass's own code changes
            return select_near(self.breakpoints(max_points), center, window, limit)
        return near_breakpoints(self, center, window, max_points, limit)

    def refit(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        """Least-squares ``alpha`` for the code assignment at ``alpha`` (shape ``(R,)``).

        Minimises ``sum_k sum_{i in k} (x_i - alpha**e c_k)**2`` over ``alpha`` with the codes
        held fixed; the result is clipped to (0, 1].
        """
        c = self.codes(np.asarray(alpha, dtype=np.float64)[:, None])
        num = np.sum(c.level_coef * c.sum1, axis=2)[:, 0]
        den = np.sum(c.level_coef**2 * c.count, axis=2)[:, 0]
        ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
        ratio = np.clip(ratio, 1e-12, 1.0)
        return np.asarray(ratio ** (1.0 / self.exponent))
