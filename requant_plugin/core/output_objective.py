"""Layer-OUTPUT error of a quantized weight, exact through the Gram matrix (pure NumPy).

For a layer ``y = W x`` (a Linear layer, or a convolution written on its im2col columns) with
``N`` calibration input rows ``X`` (shape ``(N, n)``, ``n = C_in * kh * kw``) and
``G = X^T X / N``, the mean squared output error of output channel ``c`` with the weight
error ``e_c = w_c - q(w_c)`` is

    MSE_c = ||X e_c||^2 / N = e_c^T G e_c,

so ``G`` (``n x n``) replaces the data exactly. A row (per-channel) objective is ``MSE_c``; a
per-tensor objective is the mean over channels. Grouped convolutions use one Gram matrix per
group (channel ``c`` reads the inputs of group ``c // (C / groups)``).

:class:`OutputObjective` evaluates this for batches of range factors ``alpha`` (shape
``(R, K)``, ``R`` = number of ranges searched), quantizing ``y = T(w)`` on the same grid as the
weight objective (:class:`~.objective.RangeObjective`): scale ``alpha * s1`` with a fixed zero
point. It behaves like a range objective for :func:`~.search.golden_search`: ``rows``,
``evaluations`` and :meth:`OutputObjective.refit` (the exact least-squares ``alpha`` for the
code assignment at the current one, in the ``G`` metric).

:func:`error_feedback_round` is an optional rounding step on a fixed grid: the columns of
``W`` are rounded one at a time and the error of each is spread over the columns not yet
rounded so that ``e^T G e`` stays small (the optimal-brain-quantization update, using the
Cholesky factor of ``G^-1``). The grid, and so the uniform ranges, are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .damped import DampedFactor
from .gram_factor import GramFactor
from .grid import Grid
from .linalg import CholeskyQuad
from .transform import PowerTransform

_CHUNK = 1 << 23  # max float64 elements of one error block (R * K * C_r * n)
#: from this input width on, ``e^T G e`` is evaluated through the Cholesky factor of ``G`` (half the flops,
#: in float32: about 4x faster than the dense float64 product)
CHOLESKY_MIN_N = 256
#: columns rounded one by one between two matrix-product updates of :func:`error_feedback_round`'s block
_SUB_BLOCK = 16


def gram_from_rows(x: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """``(X^T X / N, mean of the rows, N)`` of the 2-D input rows ``x`` (one-shot reference)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError("x must be 2-D with at least one row")
    return x.T @ x / x.shape[0], x.mean(axis=0), int(x.shape[0])


def direct_output_mse(
    x: NDArray[np.floating], w: NDArray[np.floating], w_hat: NDArray[np.floating]
) -> NDArray[np.float64]:
    """Per-channel ``||X w_c^T - X w_hat_c^T||^2 / N`` computed on the data (reference)."""
    x = np.asarray(x, dtype=np.float64)
    d = x @ (np.asarray(w, dtype=np.float64) - np.asarray(w_hat, dtype=np.float64)).T  # (N, C)
    return np.asarray(np.mean(d * d, axis=0))


class OutputObjective:
    """``L(alpha)`` = mean output MSE of the channels of each searched range.

    Args:
        weight: ``(C, n)`` weight rows (one per output channel).
        gram: ``(n, n)`` or ``(groups, n, n)`` input Gram matrices ``X^T X / N``.
        grid: the integer grid.
        p: transform exponent in (0, 1] (1 = uniform grid).
        per_channel: one ``alpha`` per channel (``R = C``) or one for the tensor (``R = 1``).
        factor: ``G`` in factored form (:func:`~.gram_factor.factor_gram`, one group only): the
            losses are then evaluated as ``||F^T e||^2 + sum(d e^2)`` (exact for a rank-deficient
            ``G``), ``n / (k + 1)`` times cheaper. Without it, one Gram matrix at least
            :data:`CHOLESKY_MIN_N` wide is evaluated as ``||L^T e||^2`` (:class:`~.linalg.CholeskyQuad`,
            float32 products: relative error about 1e-6 of each loss) where its live block is positive definite.

    The base range is min-max of ``T(w)`` per row (``[lo, hi]``, fixing ``s1`` and ``z``) and
    the transform normaliser ``m`` is ``max|w|`` per row, exactly as in the weight objective.
    """

    def __init__(
        self, weight: NDArray[np.floating], gram: NDArray[np.floating], grid: Grid, *,
        p: float = 1.0, per_channel: bool = True, factor: GramFactor | None = None,
    ) -> None:
        w = np.asarray(weight, dtype=np.float64)
        if w.ndim != 2 or w.size == 0:
            raise ValueError("weight must be 2-D (channels, in_features) and non-empty")
        g = np.asarray(gram, dtype=np.float64)
        if g.ndim == 2:
            g = g[None]
        c, n = w.shape
        if g.ndim != 3 or g.shape[1:] != (n, n):
            raise ValueError(f"gram must be ({n}, {n}) or (groups, {n}, {n}), got {np.shape(gram)}")
        if c % g.shape[0]:
            raise ValueError(f"{c} channels cannot be split into {g.shape[0]} groups")
        if factor is not None and (g.shape[0] != 1 or factor.factor.shape[0] != n):
            raise ValueError(f"factor must factor one ({n}, {n}) Gram matrix")
        self.grid, self.per_channel, self.gram, self.factor = grid, per_channel, g, factor
        self.cholesky = CholeskyQuad.of(g[0], single=True) \
            if factor is None and g.shape[0] == 1 and n >= CHOLESKY_MIN_N else None
        self.channels, self.n = c, n
        self.groups = g.shape[0]
        self.rows = c if per_channel else 1
        self.w = w.reshape(self.rows, -1, n)  # (R, C_r, n)
        flat = self.w.reshape(self.rows, -1)
        self.transform = PowerTransform.fit(flat, p)
        y = self.transform.forward(flat)
        self.s1, self.z = grid.base_qparams(y.min(axis=1), y.max(axis=1))
        self.y = y.reshape(self.w.shape)
        # where the forms are float32 products anyway (factor or Cholesky), the search's codes, levels and errors
        # are float32 too (the forms summed in float64)
        dt = np.float32 if self.factor is not None or self.cholesky is not None else np.float64
        self._y_loss, self._w_loss = self.y.astype(dt, copy=False), self.w.astype(dt, copy=False)
        self._gw: NDArray[np.float64] | None = None  # G w_c per channel, for refit (made once)
        # level coefficients: w_hat = alpha**e * T^-1(s1 * (q - z)) because T^-1 is homogeneous
        self.exponent = 1.0 if self.transform.is_identity else 1.0 / self.transform.p
        self.evaluations = 0

    # -- quantization ---------------------------------------------------------------------
    def codes(self, alpha: NDArray[np.float64], *, loss: bool = False) -> NDArray[Any]:
        """Integer codes minus the zero point, ``(R, K, C_r, n)``, for ``alpha`` ``(R, K)``;
        ``loss``: in the loss evaluations' dtype (float32 where the forms are float32 products)."""
        y = self._y_loss if loss else self.y
        s = (np.asarray(alpha, dtype=np.float64) * self.s1[:, None])[:, :, None, None].astype(y.dtype)
        z = self.z[:, None, None, None].astype(y.dtype)
        q = np.divide(y[:, None], s)  # clip(rint(y / s) + z, ...) - z, in place
        np.rint(q, out=q)
        q += z
        np.clip(q, self.grid.quant_min, self.grid.quant_max, out=q)
        q -= z
        return q

    def base_levels(self, a: NDArray[np.float64], *, inplace: bool = False) -> NDArray[np.float64]:
        """``T^-1(s1 * a)`` for codes-minus-zero-point ``a`` ``(R, ...)`` (the alpha=1 levels);
        ``inplace``: overwrite ``a`` where the transform allows (:meth:`PowerTransform.inverse_inplace`)."""
        s1 = self.s1.reshape((-1,) + (1,) * (a.ndim - 1))
        if not inplace:
            return self.transform.inverse(s1 * a)
        a *= s1
        return self.transform.inverse_inplace(a)

    def dequantize(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        """Fake-quantized weight ``(C, n)`` for one ``alpha`` per row (shape ``(R,)``)."""
        alpha = np.asarray(alpha, dtype=np.float64).reshape(self.rows, 1)
        coef = self.base_levels(self.codes(alpha))  # (R, 1, C_r, n)
        return np.asarray((alpha[:, :, None, None] ** self.exponent * coef).reshape(self.channels, self.n))

    # -- the metric -------------------------------------------------------------------------
    def _quad(self, a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
        """``a_c^T G_c b_c`` for ``a, b`` of shape ``(R, K, C_r, n)``; returns ``(R, K, C_r)``."""
        r, k, cr, n = a.shape
        if self.factor is not None:
            av = a.reshape(-1, n)
            return self.factor.quad(av, av if b is a else b.reshape(-1, n)).reshape(r, k, cr)
        if self.cholesky is not None and b is a:
            return self.cholesky(a.reshape(-1, n)).reshape(r, k, cr)
        if self.groups == 1:
            av = a.reshape(-1, n)
            return np.einsum("ij,ij->i", av @ self.gram[0], b.reshape(-1, n)).reshape(r, k, cr)
        ch = np.arange(self.channels).reshape(r, cr)  # channel index of each (row, slot)
        grp = ch // (self.channels // self.groups)
        out = np.empty((r, k, cr))
        for gi in range(self.groups):
            sel = grp == gi
            if not sel.any():
                continue
            ri, ci = np.nonzero(sel)
            av = a[ri, :, ci].reshape(-1, n)  # (S*K, n)
            bv = b[ri, :, ci].reshape(-1, n)
            out[ri, :, ci] = np.einsum("ij,ij->i", av @ self.gram[gi], bv).reshape(-1, k)
        return out

    def _loss_chunk(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        e = self.base_levels(self.codes(alpha, loss=True), inplace=True)
        e *= (alpha ** self.exponent)[:, :, None, None]  # w_hat, then the error in place
        np.subtract(self._w_loss[:, None], e, out=e)
        self.evaluations += alpha.shape[1]
        return np.asarray(np.maximum(self._quad(e, e), 0.0).mean(axis=2))

    def __call__(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        """Mean output MSE for ``alpha`` of shape ``(R, K)`` (or ``(K,)`` for every row)."""
        alpha = np.asarray(alpha, dtype=np.float64)
        if alpha.ndim == 1:
            alpha = np.broadcast_to(alpha[None, :], (self.rows, alpha.shape[0]))
        per = max(1, self.w.size)
        step = max(1, _CHUNK // per)
        parts = [self._loss_chunk(alpha[:, i:i + step]) for i in range(0, alpha.shape[1], step)]
        return np.concatenate(parts, axis=1)

    def channel_mse(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        """Per-channel output MSE ``(C,)`` at one ``alpha`` per row (shape ``(R,)``)."""
        e = (self.w.reshape(self.channels, self.n) - self.dequantize(alpha)).reshape(self.w.shape)[:, None]
        return np.asarray(self._quad(e, e).reshape(self.channels))

    def column_quantizer(
        self, alpha: NDArray[np.float64], channels: slice | None = None,
    ) -> Callable[[int, NDArray[np.float64]], NDArray[np.float64]]:
        """``f(j, v)``: fake-quantize column ``j`` of the weight (values ``v``, one per channel
        of ``channels``, default all) on the grid of ``alpha`` (``(R,)``), for
        :func:`error_feedback_round`."""
        alpha = np.asarray(alpha, dtype=np.float64).reshape(self.rows)
        per_ch = self.channels // self.rows
        sel = slice(None) if channels is None else channels
        s = np.repeat(alpha * self.s1, per_ch)[sel]
        z = np.repeat(self.z.astype(np.float64), per_ch)[sel]
        m = np.repeat(self.transform.m, per_ch)[sel]
        tf = PowerTransform(self.transform.p, m)
        lo, hi = self.grid.quant_min, self.grid.quant_max

        def quantize(_j: int, v: NDArray[np.float64]) -> NDArray[np.float64]:
            q = np.clip(np.rint(tf.forward(v) / s) + z, lo, hi)
            return tf.inverse(s * (q - z))

        return quantize

    def _gram_w(self) -> NDArray[np.float64]:
        """``G_c w_c`` per channel, ``(R, 1, C_r, n)`` (made on first use)."""
        if self._gw is None:
            w = self.w.reshape(self.channels, self.n)
            per = self.channels // self.groups
            gw = np.concatenate([w[gi * per:(gi + 1) * per] @ self.gram[gi] for gi in range(self.groups)])
            self._gw = gw.reshape(self.w.shape)[:, None]
        return self._gw

    def refit(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        """Least-squares ``alpha`` (in the ``G`` metric) for the codes at ``alpha`` (``(R,)``).

        With the codes fixed, ``w_hat = t * c`` (``t = alpha**e``), so the best ``t`` is
        ``sum_c c_c^T G w_c / sum_c c_c^T G c_c``; the result is clipped to (0, 1].
        """
        alpha = np.asarray(alpha, dtype=np.float64)
        coef = self.base_levels(self.codes(alpha[:, None]))  # (R, 1, C_r, n)
        if self.factor is not None:  # the factored metric for both sums (cheap: n (k + 1) per row)
            num = self._quad(coef, self.w[:, None]).sum(axis=(1, 2))
        else:  # G w_c is made once per objective: each refit costs O(C n) here
            num = np.einsum("rkcn,rkcn->r", coef, self._gram_w())
        den = self._quad(coef, coef).sum(axis=(1, 2))
        ok = den > 0
        t = np.where(ok, num / np.where(ok, den, 1.0), alpha ** self.exponent)
        t = np.clip(t, 1e-12, 1.0)
        return np.asarray(t ** (1.0 / self.exponent))


def output_mse(
    weight: NDArray[np.floating], w_hat: NDArray[np.floating], gram: NDArray[np.floating], *, single: bool = False,
) -> NDArray[np.float64]:
    """Per-channel ``e_c^T G e_c`` for ``e = weight - w_hat`` (``(C, n)``; ``gram`` ``(n, n)``
    or ``(groups, n, n)``); ``single``: the products in float32 (relative error about 1e-6), summed in float64."""
    e = np.asarray(weight, dtype=np.float64) - np.asarray(w_hat, dtype=np.float64)
    g = np.asarray(gram, dtype=np.float32 if single else np.float64)
    g = g[None] if g.ndim == 2 else g
    if single:
        e = e.astype(np.float32)
    per = e.shape[0] // g.shape[0]
    out = np.empty(e.shape[0])
    for gi in range(g.shape[0]):
        eg = e[gi * per:(gi + 1) * per]
        out[gi * per:(gi + 1) * per] = np.einsum("ij,ij->i", eg @ g[gi], eg, dtype=np.float64)
    return out


def error_feedback_round(
    weight: NDArray[np.floating], gram: NDArray[np.floating],
    quantize_column: Callable[[int, NDArray[np.float64]], NDArray[np.float64]],
    *, damp: float = 0.01, block: int = 128, order: str = "input", factor: DampedFactor | None = None,
) -> NDArray[np.float64]:
    """Round the columns of ``weight`` ``(C, n)`` in order, feeding each error forward.

    ``quantize_column(j, v)`` returns the fake-quantized values of column ``j`` (``v`` has
    shape ``(C,)``). With ``H = G + damp * mean(diag G) * I`` and ``U`` the upper Cholesky
    factor of ``H^-1`` (:class:`~.damped.DampedFactor`, or ``factor`` when given: made from
    ``gram`` with the same ``damp`` and ``order``), after rounding column ``j`` the remaining
    columns are updated by ``W[:, j+1:] -= ((w_j - q_j) / U_jj) * U[j, j+1:]``: the exact
    minimiser of the output error ``e^T H e`` over the columns still free, given the rounded ones.
    Returns the fake-quantized weight. ``order="energy"`` rounds the columns with the largest
    input energy ``G_jj`` first (their errors are then compensated by the others); ``"input"``
    keeps the natural order. Only one Gram matrix (no groups) is supported. The columns not yet
    rounded are updated in float32 (``U`` and the codes stay float64), stored column-major.
    """
    w0 = np.asarray(weight, dtype=np.float64)
    n = w0.shape[1]
    if np.shape(gram) != (n, n):
        raise ValueError(f"gram must be ({n}, {n}), got {np.shape(gram)}")
    if factor is None:
        factor = DampedFactor.of(gram, damp, order)
    else:
        factor.check(n, damp, order)
    perm, u = factor.perm, factor.upper
    # the working copy in float32 (as GPTQ), transposed: column j of W is the contiguous row j
    wt = np.ascontiguousarray(w0[:, perm].T, dtype=np.float32)
    u32 = u.astype(np.float32)
    q = np.zeros(wt.shape)
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        err_blk = np.zeros((b1 - b0, wt.shape[1]), dtype=np.float32)
        for s0 in range(b0, b1, _SUB_BLOCK):  # column by column inside a sub-block, products between them
            s1 = min(b1, s0 + _SUB_BLOCK)
            for j in range(s0, s1):
                col = wt[j].astype(np.float64)
                qc = np.asarray(quantize_column(int(perm[j]), col), dtype=np.float64)
                q[j] = qc
                err = ((col - qc) / u[j, j]).astype(np.float32)
                wt[j + 1:s1] -= np.outer(u32[j, j + 1:s1], err)
                err_blk[j - b0] = err
            wt[s1:b1] -= u32[s0:s1, s1:b1].T @ err_blk[s0 - b0:s1 - b0]
        wt[b1:] -= u32[b0:b1, b1:].T @ err_blk
    out = np.empty((w0.shape[0], n))
    out[:, perm] = q.T
    return out
