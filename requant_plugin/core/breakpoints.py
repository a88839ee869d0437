"""Where the code assignment of a :class:`~.objective.RangeObjective` changes, near a given ``alpha``.

Value ``y = T(x)`` crosses the rounding threshold ``(k - z + 1/2) * s`` at
``alpha = y / ((k - z + 1/2) * s1)``; the search evaluates both sides of the changes near its best
``alpha`` (the sawtooth minima of short rows sit there).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from .transform import PowerTransform

__all__ = [
    "SortedRows", "band_keys", "breakpoints_between", "change_runs", "near_breakpoints", "row_bands", "select_near",
]


class SortedRows(Protocol):
    """What the breakpoint finders read from a :class:`~.objective.RangeObjective`."""

    rows: int
    n: int
    s1: NDArray[np.float64]
    transform: PowerTransform

    @property
    def values(self) -> NDArray[np.floating]: ...

    @property
    def half(self) -> NDArray[np.float64]: ...

    @property
    def transformed(self) -> NDArray[np.float64]: ...

    @property
    def transformed_keys(self) -> NDArray[np.float64]: ...


def row_bands(y: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per row of the sorted rows ``y`` ``(R, n)``: its low end, its span (1 where 0) and the offset
    ``3r``, which map row ``r`` onto ``[3r, 3r + 1]`` (``(y - low) / span + 3r``)."""
    low = y[:, :1].astype(np.float64)
    span = y[:, -1:] - low
    off = 3.0 * np.arange(y.shape[0], dtype=np.float64)[:, None]
    return low, np.where(span > 0, span, 1.0), off


def band_keys(y: NDArray[np.floating]) -> NDArray[np.float64]:
    """Sorted rows ``y`` ``(R, n)`` as one ascending flat array, row ``r`` on ``[3r, 3r + 1]``
    (:func:`row_bands`), so that one binary search serves every row."""
    low, span, off = row_bands(y)
    return ((y - low) / span + off).ravel()


def change_runs(
    obj: SortedRows, lo: NDArray[np.float64], hi: NDArray[np.float64],
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Per ``(row, threshold)`` (flat, row-major): the first flat index into the sorted rows and
    the length of the run of values whose breakpoint may lie in ``[lo, hi]`` (binary search, one
    index of slack on each side)."""
    y = obj.transformed  # (R, n), ascending
    den = obj.s1[:, None] * obj.half  # (R, L-1): a = y / den
    lo_y, hi_y = den * (lo[:, None] * (1.0 - 1e-9)), den * (hi[:, None] * (1.0 + 1e-9))
    lo_y, hi_y = np.minimum(lo_y, hi_y), np.maximum(lo_y, hi_y)
    y0, span, off = row_bands(y)
    keys = obj.transformed_keys
    first = np.searchsorted(keys, (np.clip((lo_y - y0) / span, -1.0, 2.0) + off).ravel(), side="left")
    last = np.searchsorted(keys, (np.clip((hi_y - y0) / span, -1.0, 2.0) + off).ravel(), side="right")
    first = np.maximum(first - 1, 0)  # ulp-level disorder of the transformed values
    cnt = np.maximum(np.minimum(last + 1, keys.size) - first, 0)
    return first, cnt


def breakpoints_between(
    obj: SortedRows, lo: NDArray[np.float64], hi: NDArray[np.float64],
    runs: tuple[NDArray[np.intp], NDArray[np.intp]] | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    """The ``breakpoints`` ``a`` (same float operations) with ``lo[r] <= a <= hi[r]`` and
    ``0 < a <= 1``, as flat ``(row, threshold, value index, a)`` arrays (unordered). For each
    threshold the values concerned form one run of the sorted row (``runs``, from :func:`change_runs`
    when not given), filtered exactly."""
    width = obj.half.shape[1]
    y = obj.transformed
    den = obj.s1[:, None] * obj.half
    first, cnt = change_runs(obj, lo, hi) if runs is None else runs
    total = int(cnt.sum())
    run = np.repeat(np.arange(cnt.size), cnt)  # (r, k) flat index of each entry
    flat_i = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(first, cnt)
    r, k = run // width, run % width
    i = flat_i - r * obj.n
    inside = (i >= 0) & (i < obj.n)
    r, k, i = r[inside], k[inside], i[inside]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = y[r, i] / den[r, k]
    ok = (a > 0) & (a <= 1) & (a >= lo[r]) & (a <= hi[r])
    return r[ok], k[ok], i[ok], a[ok]


def near_breakpoints(
    obj: SortedRows, center: NDArray[np.float64], window: float, max_points: int, limit: int,
) -> NDArray[np.float64] | None:
    """The ``breakpoints`` ``a`` with ``|a - center| <= window * center`` (per row), the first
    ``limit`` of each row in ``breakpoints``' column order, NaN-padded to ``(R, K)`` with ``K``
    the most any row has (at most ``limit``); ``None`` when there are more than ``max_points``.

    The same array as selecting from ``breakpoints`` (same float operations on the same
    entries), without its ``(R, n * (L - 1))`` array: for each threshold the values whose
    breakpoint can be near form one run of the sorted row, found by binary search with a
    twice wider window and then filtered exactly.
    """
    width = obj.half.shape[1]
    center = np.asarray(center, dtype=np.float64)
    lo, hi = center * (1.0 - 2.0 * window), center * (1.0 + 2.0 * window)
    runs = change_runs(obj, lo, hi)
    if int(runs[1].reshape(obj.rows, width).sum(axis=1).max(initial=0)) > max_points:
        return None
    r, k, i, a = breakpoints_between(obj, lo, hi, runs)
    c = center[r]
    ok = np.abs(a - c) <= window * c
    r, k, i, a = r[ok], k[ok], i[ok], a[ok]
    order = np.argsort((r * obj.n + i) * width + k, kind="stable")  # breakpoints' column order
    r, a = r[order], a[order]
    per_row = np.bincount(r, minlength=obj.rows)
    keep = min(int(per_row.max(initial=0)), limit)
    rank = np.arange(r.size) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    sel = rank < keep
    out = np.full((obj.rows, keep), np.nan)
    out[r[sel], rank[sel]] = a[sel]
    return out


def select_near(
    bp: NDArray[np.float64] | None, center: NDArray[np.float64], window: float, limit: int,
) -> NDArray[np.float64] | None:
    """The entries of ``bp`` (``(R, M)``, NaN: none) with ``|a - center| <= window * center``, the
    first ``limit`` of each row in column order, NaN-padded to the most any row has."""
    if bp is None:
        return None
    center = np.asarray(center, dtype=np.float64)
    near = np.abs(bp - center[:, None]) <= window * center[:, None]
    bp = np.where(near, bp, np.nan)
    keep = min(bp.shape[1], int(np.max(np.sum(near, axis=1), initial=0)), limit)
    order = np.argsort(np.isnan(bp), axis=1, kind="stable")[:, :keep]
    return np.take_along_axis(bp, order, axis=1)
