"""``L(alpha)`` at many candidates of each row by one sweep over the code changes (pure NumPy).

Between two code changes (the objective's ``breakpoints``) the code assignment is fixed, and with
``v_k = alpha**e c_k`` the loss is ``L = (A - 2 alpha**e B + alpha**(2e) C) / N`` with
``A = sum_i x_i**2``, ``B = sum_k c_k S1_k`` and ``C = sum_k c_k**2 n_k``. A value crossing a code
change moves from one code to its neighbour and changes ``B`` and ``C`` by one term each. So the
codes are counted exactly once per row (at its smallest candidate), the code changes up to its
largest candidate are sorted together with the candidates, and cumulative sums give ``L`` at
every candidate: ``O((changes + candidates) log)`` per row instead of ``levels`` binary searches
per candidate.

The sums are re-associated, so the result agrees with :class:`~.objective.RangeObjective` to
float64 rounding (about ``1e-13`` of ``A / N``), not bit for bit: the search uses it to rank
candidates and evaluates the best few exactly (:func:`~.search.golden_search`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .breakpoints import breakpoints_between
from .objective import RangeObjective


def can_sweep(obj: object) -> bool:
    """The sweep applies to a plain :class:`RangeObjective` on raw values (not to histograms or
    subclasses with their own loss)."""
    return type(obj) is RangeObjective and getattr(obj, "_p0", 0) is None


def _window_changes(
    obj: RangeObjective, lo: NDArray[np.float64], hi: NDArray[np.float64],
    runs: tuple[NDArray[np.intp], NDArray[np.intp]] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], tuple[NDArray[Any], ...]]:
    """``A``, ``B``, ``C`` per row at ``alpha = lo`` (exact code counts), and every code change in
    ``(lo, hi]`` as flat ``(row, alpha, dB, dC)`` (rows ascending): the value leaving its code
    changes ``B`` by ``(c_dst - c_src) x`` and ``C`` by ``c_dst**2 - c_src**2``."""
    start = obj.evaluations
    codes = obj.codes(lo[:, None])
    obj.evaluations = start
    coef = obj._coef  # (R, L): v_k = alpha**e * coef_k
    a_sum = np.sum(codes.sum2[:, 0], axis=1)
    b0 = np.sum(coef * codes.sum1[:, 0], axis=1)
    c0 = np.sum(coef * coef * codes.count[:, 0], axis=1)
    r, k, i, a = breakpoints_between(obj, lo, hi, runs)
    keep = a > lo[r]  # changes after the counted point
    r, k, i, a = r[keep], k[keep], i[keep], a[keep]
    x = obj._values[r, i].astype(np.float64)
    if obj.loss_space == "transformed" and not obj.transform.is_identity:
        x = np.sign(x) * (np.abs(x) / obj.transform.m[r]) ** obj.transform.p
    up = obj._half[r, k] > 0  # positive value: leaves code k + 1 for code k as alpha grows
    c_src, c_dst = coef[r, np.where(up, k + 1, k)], coef[r, np.where(up, k, k + 1)]
    return a_sum, b0, c0, (r, a, (c_dst - c_src) * x, c_dst * c_dst - c_src * c_src)


def sweep_losses(obj: RangeObjective, alpha: NDArray[np.float64], valid: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Approximate ``L`` at ``alpha`` (``(R, M)``) where ``valid`` (``+inf`` elsewhere)."""
    rows, m = alpha.shape
    out = np.full((rows, m), np.inf)
    has = valid.any(axis=1)
    if not has.any():
        return out
    lo = np.where(valid, alpha, np.inf).min(axis=1)
    hi = np.where(valid, alpha, -np.inf).max(axis=1)
    lo, hi = np.where(has, lo, 1.0), np.where(has, hi, 1.0)
    a_sum, b0, c0, (r, a, d_b, d_c) = _window_changes(obj, lo, hi)

    # one padded row per objective row: the changes, then the candidates (a change at the same
    # alpha as a candidate counts as passed), sorted by alpha
    n_ev = np.bincount(r, minlength=rows)
    width = int(n_ev.max(initial=0)) + m
    pos = np.full((rows, width), np.inf)
    db = np.zeros((rows, width))
    dc = np.zeros((rows, width))
    rank = np.arange(r.size) - np.repeat(np.cumsum(n_ev) - n_ev, n_ev)  # r is ascending
    pos[r, rank], db[r, rank], dc[r, rank] = a, d_b, d_c
    cand_col = width - m + np.arange(m)
    pos[:, width - m:] = np.where(valid, alpha, np.inf)
    srt = np.argsort(pos, axis=1, kind="stable")
    b = b0[:, None] + np.cumsum(np.take_along_axis(db, srt, axis=1), axis=1)
    c = c0[:, None] + np.cumsum(np.take_along_axis(dc, srt, axis=1), axis=1)
    where = np.empty_like(srt)
    np.put_along_axis(where, srt, np.arange(width)[None, :].repeat(rows, axis=0), axis=1)
    at = where[:, cand_col]  # sorted position of each candidate
    b_c, c_c = np.take_along_axis(b, at, axis=1), np.take_along_axis(c, at, axis=1)
    ae = np.where(valid, alpha, 1.0) ** obj.exponent
    loss = (a_sum[:, None] - 2.0 * ae * b_c + ae * ae * c_c) / obj.total_weight[:, None]
    return np.where(valid, np.maximum(loss, 0.0), np.inf)


def piece_minima(
    obj: RangeObjective, lo: NDArray[np.float64], hi: NDArray[np.float64],
    runs: tuple[NDArray[np.intp], NDArray[np.intp]],
    top: int = 2, side: float = 1e-5,
) -> NDArray[np.float64]:
    """The ``alpha`` of the ``top`` lowest piece minima of each row on ``[lo, hi]`` (``(R, top)``, NaN: none).

    A piece is the interval between two code changes (or a window end): there ``L`` is
    ``(A - 2 u B + u**2 C) / N`` with ``u = alpha**e``, minimal at ``u = B / C`` clipped to the
    piece shrunk by ``side`` (relative) at each code change, so that every fake quantizer assigns the
    codes the piece counted (a piece narrower than that has no candidate). ``runs``: the
    :func:`~.breakpoints.change_runs` of the window.
    """
    rows = obj.rows
    a_sum, b0, c0, changes = _window_changes(obj, lo, hi, runs)
    # rows ascending, alpha ascending inside a row (the runs are monotone: a stable sort merges them)
    order = np.argsort(changes[0] * 2.0 + changes[1], kind="stable")
    r, a, d_b, d_c = (v[order] for v in changes)
    count = np.bincount(r, minlength=rows)
    first = np.cumsum(count) - count
    cb = np.concatenate([[0.0], np.cumsum(d_b)])
    cc = np.concatenate([[0.0], np.cumsum(d_c)])
    # pieces in row order: each row's window start, then one piece after each of its code changes
    total = a.size + rows
    starts = first + np.arange(rows)
    after = np.arange(a.size) + r + 1
    p_r = np.empty(total, np.intp)
    p_lo, p_b, p_c = np.empty(total), np.empty(total), np.empty(total)
    p_r[starts], p_lo[starts], p_b[starts], p_c[starts] = np.arange(rows), lo, b0, c0
    p_r[after], p_lo[after] = r, a
    p_b[after] = b0[r] + cb[1:] - cb[first][r]
    p_c[after] = c0[r] + cc[1:] - cc[first][r]
    ends = np.append(starts[1:], total) - 1
    p_hi = np.empty(total)
    p_hi[:-1] = p_lo[1:]
    p_hi[ends] = hi
    lo_in = p_lo * (1.0 + side)  # the window's own ends are no code change: not shrunk
    lo_in[starts] = lo
    hi_in = np.minimum(p_hi * (1.0 - side), 1.0)
    hi_in[ends] = hi
    e = obj.exponent
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(p_c > 0, p_b / np.where(p_c > 0, p_c, 1.0), np.inf)
    u = np.clip(u, lo_in**e, hi_in**e)
    loss = np.where(lo_in <= hi_in, a_sum[p_r] - 2.0 * u * p_b + u * u * p_c, np.inf)
    out = np.full((rows, top), np.nan)
    alpha = u ** (1.0 / e)
    for t in range(top):  # the lowest, then the next: segment minima, first index of each
        low = np.minimum.reduceat(loss, starts)
        hit = np.flatnonzero((loss == low[p_r]) & np.isfinite(loss))
        seg, at = np.unique(p_r[hit], return_index=True)
        out[seg, t] = alpha[hit[at]]
        loss[hit[at]] = np.inf
    return out


#: candidates whose swept loss is within this (relative to the row's best swept loss) ...
RANK_REL = 1e-6
#: ... plus this (relative to the row's mean square, the scale of the sweep's rounding) are
#: evaluated exactly; the sweep is ~1e-11 of the mean square off, far inside this margin
RANK_ABS = 1e-9


def contenders(obj: RangeObjective, alpha: NDArray[np.float64], valid: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The candidates (``(R, M)`` mask within ``valid``) that can hold a row's exact minimum: those
    whose swept loss is within ``RANK_REL`` of the best plus ``RANK_ABS`` of the mean square."""
    loss = sweep_losses(obj, alpha, valid)
    best = loss.min(axis=1, keepdims=True)
    scale = obj._p2[:, -1:] / obj.total_weight[:, None]  # mean square in the loss space
    return valid & (loss <= best * (1.0 + RANK_REL) + RANK_ABS * scale)


__all__ = ["RANK_ABS", "RANK_REL", "can_sweep", "contenders", "piece_minima", "sweep_losses"]
