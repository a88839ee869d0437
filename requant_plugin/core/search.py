"""One-dimensional searches for the range factor ``alpha`` in (0, 1], batched over rows.

``L(alpha)`` is piecewise quadratic and convex on each piece (locally convex), but the kinks
between pieces are concave, so at 6-8 bits it has many shallow local minima. The
``"golden"`` search therefore (1) scans a coarse bracketing grid (geometric below 0.25, linear
above, ``alpha = 1`` included so the result is never worse than min-max), (2) runs
golden-section search inside the brackets of the best few local minima of the scan, and
(3) polishes the winner with the exact per-piece least-squares step of
:meth:`Objective.refit`, keeping it only if it lowers the loss. Many rows of raw values (per
channel) at up to 4 bits replace (2) by the exact minimum over every piece of the scan's plateau (the window
where the scan is within ``PLATEAU / sqrt(n)`` of its best; :func:`~.sweep.piece_minima`): the
plateau of a row of a few hundred values is flat to about that, with minima anywhere on it. ``"grid"`` is the dense
reference: ``L`` at ``grid_points`` evenly spaced values ``k / grid_points``; ``"minmax"``
pins ``alpha = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from .breakpoints import change_runs, select_near
from .grid import Grid
from .objective import RangeObjective
from .sweep import can_sweep, contenders, piece_minima

#: The search names as a typing alias (validation: :class:`~requant_plugin.options.Search`).
SearchMethod = Literal["golden", "grid", "minmax"]
INV_PHI = (np.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class SearchResult:
    """Best ``alpha`` and ``L(alpha)`` per row, and the candidates evaluated per row."""

    alpha: NDArray[np.float64]
    mse: NDArray[np.float64]
    evaluations: int


class Objective(Protocol):
    """What the searches need from an objective (``RangeObjective`` is the main one).

    ``obj(alpha)`` maps ``(rows, K)`` candidates to ``(rows, K)`` losses and adds ``K`` to
    ``evaluations``; ``refit(alpha)`` proposes a better ``alpha`` per row (or returns it).
    """

    rows: int
    n: int
    grid: Grid
    evaluations: int

    def __call__(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]: ...

    def refit(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]: ...


class _Best:
    def __init__(self, rows: int) -> None:
        self.alpha = np.ones(rows)
        self.mse = np.full(rows, np.inf)

    def update(self, alpha: NDArray[np.float64], mse: NDArray[np.float64]) -> None:
        k = np.argmin(mse, axis=1)
        r = np.arange(mse.shape[0])
        better = mse[r, k] < self.mse
        self.alpha = np.where(better, alpha[r, k], self.alpha)
        self.mse = np.where(better, mse[r, k], self.mse)


SCAN_BUDGET = 1 << 20  # rows * scan points * levels evaluated by the scan


LARGE_ROW = 1 << 16  # rows longer than this have a smooth L(alpha): a coarse scan suffices
#: rows with at most this many code changes (``n * (levels - 1)``) also try both sides of each
BREAKPOINT_BUDGET = 1 << 11
#: longer rows (up to this many code changes) try the code changes near the best alpha found:
#: within LOCAL_WINDOW (relative), at most LOCAL_POINTS per row
LOCAL_BUDGET = 1 << 17
LOCAL_WINDOW = 0.01
LOCAL_POINTS = 2048
#: relative offset of those evaluations from the code change: far above float32 rounding, so
#: that every fake-quantizer assigns the codes the objective counted
SIDE = 1e-5
#: more side candidates per row than this are ranked by a sweep (:mod:`.sweep`) first
SWEEP_MIN = 16


#: scan points of the plateau search (many rows of at most PLATEAU_LEVELS codes, :func:`_plateau_search`;
#: finer grids have deep narrow minima off the plateau, and keep the golden-section brackets)
PLATEAU_SCAN = 48
PLATEAU_LEVELS = 16
#: a scan point within ``PLATEAU / sqrt(n)`` (relative) of a row's best is on its plateau
PLATEAU = 0.6
#: the plateau search runs while every row has at most this many code changes in its window ...
PLATEAU_ROW_BUDGET = 1 << 14
#: ... and all rows together at most this many (else the golden-section brackets are used)
PLATEAU_BUDGET = 1 << 24


def scan_size(rows: int, levels: int, n: int) -> int:
    """Scan points: 64 for long rows (smooth L), else as many as the budget allows (48..1024).

    Short rows (small layers, single channels) have jagged curves with narrow minima, and
    there each evaluation is cheap, so they get a dense scan.
    """
    if n > LARGE_ROW:
        return 64
    return int(np.clip(SCAN_BUDGET // max(1, rows * levels), 48, 1024))


def scan_points(n_geometric: int = 12, n_linear: int = 36, low: float = 1e-3) -> NDArray[np.float64]:
    """The bracketing scan: geometric on [low, 0.25), linear on [0.25, 1] (1 included)."""
    geo = np.geomspace(low, 0.25, n_geometric, endpoint=False)
    lin = np.linspace(0.25, 1.0, n_linear)
    return np.concatenate([geo, lin])


#: a range factor below 1 must lower the loss by more than this (relative) to replace min-max
MINMAX_MARGIN = 1e-5


def _prefer_minmax(obj: Objective, best: _Best, start: int, l1: NDArray[np.float64] | None = None) -> SearchResult:
    """``alpha = 1`` where the best ``alpha`` gains less than :data:`MINMAX_MARGIN` over it.

    Such gains come from a handful of values sitting within float rounding of a rounding
    threshold, so a fake-quantizer computing in float32 may not reproduce them; min-max is then
    the safe choice (it is never worse than itself). ``l1``: ``L(1)`` per row when the caller
    already evaluated it (else it is evaluated here).
    """
    if l1 is None:
        l1 = obj(np.ones((obj.rows, 1)))[:, 0]
    keep = best.mse < l1 * (1.0 - MINMAX_MARGIN)
    return SearchResult(np.where(keep, best.alpha, 1.0), np.where(keep, best.mse, l1), obj.evaluations - start)


def _try_sides(obj: Objective, best: _Best, bp: NDArray[np.float64], one_seen: bool = False) -> None:
    """Evaluate both sides (relative offset :data:`SIDE`) of the code changes ``bp`` (NaN: none).

    A NaN stands for ``alpha = 1``; with ``one_seen`` (``L(1)`` is already in ``best``, which it
    can then never strictly beat) those entries are dropped first, keeping the others in order:
    the same update as evaluating them all.
    """
    start, count = obj.evaluations, 2 * bp.shape[1]  # the candidates evaluated, as counted before
    if one_seen and bp.size:
        finite = np.isfinite(bp)
        keep = int(np.max(np.sum(finite, axis=1)))
        if keep < bp.shape[1]:
            order = np.argsort(~finite, axis=1, kind="stable")[:, :keep]
            bp = np.take_along_axis(bp, order, axis=1)
    if bp.shape[1] == 0:
        obj.evaluations = start + count
        return
    side = np.concatenate([bp * (1.0 - SIDE), np.minimum(bp * (1.0 + SIDE), 1.0)], axis=1)
    side = np.where(np.isfinite(side), side, 1.0)
    if not (one_seen and side.shape[1] > SWEEP_MIN and can_sweep(obj)):
        best.update(side, obj(side))
        obj.evaluations = start + count
        return
    # rank all by one sweep, evaluate exactly those that can hold the minimum (in their order,
    # padded with alpha = 1, which cannot beat ``best``): the same update, counted as before
    assert isinstance(obj, RangeObjective)
    cand = contenders(obj, side, side < 1.0)
    keep = int(np.max(np.sum(cand, axis=1)))
    if keep:
        order = np.argsort(~cand, axis=1, kind="stable")[:, :keep]
        packed = np.where(np.take_along_axis(cand, order, axis=1), np.take_along_axis(side, order, axis=1), 1.0)
        best.update(packed, obj(packed))
    obj.evaluations = start + count


def _near_breakpoints(obj: Objective, center: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """The code changes within :data:`LOCAL_WINDOW` of ``center``, the first :data:`LOCAL_POINTS`
    per row in the objective's breakpoint order (NaN-padded), or ``None`` for rows with more than
    :data:`LOCAL_BUDGET` code changes. Objectives without ``near_breakpoints`` select them from
    their full ``breakpoints`` array (the same result)."""
    fast = getattr(obj, "near_breakpoints", None)
    if callable(fast):
        out: NDArray[np.float64] | None = fast(center, LOCAL_WINDOW, LOCAL_BUDGET, LOCAL_POINTS)
        return out
    return select_near(obj.breakpoints(LOCAL_BUDGET), center, LOCAL_WINDOW, LOCAL_POINTS)  # type: ignore[attr-defined]


def _rows_call(obj: Objective, alpha: NDArray[np.float64], rows: NDArray[np.intp]) -> NDArray[np.float64]:
    """``L`` at ``alpha`` (``(R, K)``) for the rows ``rows`` only, where the objective can."""
    fast = getattr(obj, "rows_call", None)
    if callable(fast) and rows.size < obj.rows:
        out: NDArray[np.float64] = fast(alpha[rows], rows)
        return out
    return obj(alpha)[rows]


def minmax_search(obj: Objective) -> SearchResult:
    """No search: ``alpha = 1`` (plain min-max / max-abs ranges), for baselines and tests."""
    start = obj.evaluations
    one = np.ones((obj.rows, 1))
    return SearchResult(one[:, 0], obj(one)[:, 0], obj.evaluations - start)


def grid_search(obj: Objective, grid_points: int = 2000) -> SearchResult:
    """Dense reference search: ``alpha = k / grid_points`` for ``k = 1..grid_points``."""
    start = obj.evaluations
    alphas = np.arange(1, grid_points + 1, dtype=np.float64) / grid_points
    best = _Best(obj.rows)
    a2 = np.broadcast_to(alphas[None, :], (obj.rows, grid_points))
    best.update(a2, obj(a2))
    return SearchResult(best.alpha, best.mse, obj.evaluations - start)


def golden_search(
    obj: Objective, *, n_brackets: int = 4, tol: float = 1e-3, max_iter: int = 40,
    refine_steps: int = 3, scan: NDArray[np.float64] | None = None, scan_rows: int | None = None,
) -> SearchResult:
    """Bracketing scan + golden-section search in the best brackets + least-squares polish.

    Rows with at most :data:`BREAKPOINT_BUDGET` code changes (short rows at low bit widths,
    where ``L`` is a sawtooth whose minima sit just beside a code change) also evaluate both
    sides of every code change (the objective's ``breakpoints``, when it has them); rows with at
    most :data:`LOCAL_BUDGET` code changes near the best ``alpha`` found do so for those within
    :data:`LOCAL_WINDOW` of it. Several rows of raw values on at most :data:`PLATEAU_LEVELS` codes
    (``scan`` not given) take the plateau search instead (:func:`_plateau_search`), unless their
    plateaus hold more code changes than its budgets. ``scan_rows``: the rows sharing the scan's
    budget (:func:`scan_size`; default ``obj.rows``), so that a block of a layer's rows scans the
    points the whole layer would.
    """
    start = obj.evaluations
    if scan is None and obj.rows > 1 and obj.grid.levels <= PLATEAU_LEVELS and isinstance(obj, RangeObjective) \
            and can_sweep(obj):
        found = _plateau_search(obj, refine_steps)
        if found is not None:
            return found
        obj.evaluations = start
    if scan is None:
        k = scan_size(obj.rows if scan_rows is None else scan_rows, obj.grid.levels, obj.n)
        pts = scan_points(k // 4, k - k // 4)
    else:
        pts = np.asarray(scan, dtype=np.float64)
    rows = obj.rows
    best = _Best(rows)
    a_scan = np.broadcast_to(pts[None, :], (rows, pts.size))
    l_scan = obj(a_scan)
    best.update(a_scan, l_scan)
    at_one = np.flatnonzero(pts == 1.0)
    l1 = l_scan[:, at_one[0]].copy() if at_one.size else None

    # Local minima of the scan (ties count), best first.
    padded = np.concatenate([np.full((rows, 1), np.inf), l_scan, np.full((rows, 1), np.inf)], axis=1)
    is_min = (l_scan <= padded[:, :-2]) & (l_scan <= padded[:, 2:])
    ranked = np.where(is_min, l_scan, np.inf)
    m = min(n_brackets, pts.size)
    order = np.argsort(ranked, axis=1, kind="stable")[:, :m]
    left = pts[np.maximum(order - 1, 0)]
    left = np.where(order == 0, pts[0] * 0.5, left)
    right = pts[np.minimum(order + 1, pts.size - 1)]
    valid = np.isfinite(np.take_along_axis(ranked, order, axis=1))

    a, b = left.copy(), right.copy()
    c = b - INV_PHI * (b - a)
    d = a + INV_PHI * (b - a)
    lc, ld = obj(c), obj(d)
    best.update(np.where(valid, c, 1.0), np.where(valid, lc, np.inf))
    best.update(np.where(valid, d, 1.0), np.where(valid, ld, np.inf))
    for _ in range(max_iter):
        # only the valid brackets not yet converged move (and only their rows are evaluated)
        live = valid & ((b - a) >= tol * np.maximum(b, tol))
        rows_live = np.flatnonzero(live.any(axis=1))
        if rows_live.size == 0:
            break
        go_left = lc <= ld  # keep [a, d] (new point left) or [c, b] (new point right)
        na, nb = np.where(go_left, a, c), np.where(go_left, d, b)
        x = np.where(go_left, nb - INV_PHI * (nb - na), na + INV_PHI * (nb - na))
        lx = np.full(x.shape, np.inf)
        lx[rows_live] = _rows_call(obj, x, rows_live)
        best.update(np.where(live, x, 1.0), np.where(live, lx, np.inf))
        a, b = np.where(live, na, a), np.where(live, nb, b)
        c, d, lc, ld = (
            np.where(live & go_left, x, np.where(live, d, c)), np.where(live & ~go_left, x, np.where(live, c, d)),
            np.where(live & go_left, lx, np.where(live, ld, lc)), np.where(live & ~go_left, lx, np.where(live, lc, ld)),
        )
    breakpoints = getattr(obj, "breakpoints", None)
    if callable(breakpoints):
        bp = breakpoints(BREAKPOINT_BUDGET)
        if bp is not None:  # short rows: both sides of every code change (sawtooth minima sit there)
            _try_sides(obj, best, bp, l1 is not None)
        else:  # longer rows: the code changes within LOCAL_WINDOW of the best alpha found
            near = _near_breakpoints(obj, best.alpha)
            if near is not None and near.shape[1]:
                _try_sides(obj, best, near, l1 is not None)
                _local_pieces(obj, best)
    _polish(obj, best, refine_steps)
    return _prefer_minmax(obj, best, start, l1)


def _local_pieces(obj: Objective, best: _Best) -> None:
    """The exact minimum of every piece (codes fixed, between two code changes) within
    :data:`LOCAL_WINDOW` of the best ``alpha`` (objectives the sweep applies to): there ``L`` is
    smooth and its minimum may lie inside a piece, away from both code changes."""
    if not can_sweep(obj):
        return
    assert isinstance(obj, RangeObjective)
    lo = np.maximum(best.alpha * (1.0 - LOCAL_WINDOW), 1e-12)
    hi = np.minimum(best.alpha * (1.0 + LOCAL_WINDOW), 1.0)
    cand = _window_piece_minima(obj, lo, hi, LOCAL_BUDGET, None)
    if cand is not None:
        best.update(cand, obj(cand))


def _window_piece_minima(
    obj: RangeObjective, lo: NDArray[np.float64], hi: NDArray[np.float64], row_budget: int, budget: int | None,
) -> NDArray[np.float64] | None:
    """The exact minimum of every piece in each row's window ``[lo, hi]`` (``(rows, pieces)``; a piece
    without one gives ``alpha = 1``), or ``None`` when a row holds more than ``row_budget`` code changes
    there (or all rows together more than ``budget``)."""
    runs = change_runs(obj, lo, hi)
    per_row = runs[1].reshape(obj.rows, -1).sum(axis=1)
    if int(per_row.max(initial=0)) > row_budget or (budget is not None and int(per_row.sum()) > budget):
        return None
    cand = piece_minima(obj, lo, hi, runs, side=SIDE)
    return np.where(np.isfinite(cand), cand, 1.0)


def _polish(obj: Objective, best: _Best, steps: int) -> None:
    """Up to ``steps`` least-squares refits of the best ``alpha`` (kept where they lower ``L``)."""
    for _ in range(steps):
        cand = obj.refit(best.alpha)
        lc1 = obj(cand[:, None])
        before = best.mse.copy()
        best.update(cand[:, None], lc1)
        if np.all(best.mse >= before):
            break


def _plateau_search(obj: RangeObjective, refine_steps: int) -> SearchResult | None:
    """Scan, then the exact minimum over the pieces of each row's plateau (rows with at most
    :data:`BREAKPOINT_BUDGET` code changes: over all of them); ``None`` (nothing decided) when
    the windows hold more code changes than :data:`PLATEAU_ROW_BUDGET` / :data:`PLATEAU_BUDGET`."""
    start = obj.evaluations
    pts = scan_points(PLATEAU_SCAN // 4, PLATEAU_SCAN - PLATEAU_SCAN // 4)
    rows = obj.rows
    a_scan = np.broadcast_to(pts[None, :], (rows, pts.size))
    l_scan = obj(a_scan)
    if obj.n * obj.half.shape[1] <= BREAKPOINT_BUDGET:  # short rows: every piece
        lo, hi = np.full(rows, pts[0] * 0.5), np.ones(rows)
    else:
        flat = l_scan <= l_scan.min(axis=1, keepdims=True) * (1.0 + PLATEAU / np.sqrt(obj.n))
        first = np.argmax(flat, axis=1)
        last = pts.size - 1 - np.argmax(flat[:, ::-1], axis=1)
        lo = np.where(first == 0, pts[0] * 0.5, pts[np.maximum(first - 1, 0)])
        hi = pts[np.minimum(last + 1, pts.size - 1)]
    cand = _window_piece_minima(obj, lo, hi, PLATEAU_ROW_BUDGET, PLATEAU_BUDGET)
    if cand is None:
        return None
    best = _Best(rows)
    best.update(a_scan, l_scan)
    best.update(cand, obj(cand))
    _polish(obj, best, refine_steps)
    return _prefer_minmax(obj, best, start, l_scan[:, -1].copy())
