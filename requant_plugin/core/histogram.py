"""A streaming histogram with exact per-bin count, sum and sum of squares (pure NumPy).

Bins have width ``h`` and are anchored at zero: bin ``i`` holds ``x`` with
``floor(x / h) == i``. The histogram keeps ``bins`` consecutive bins starting at index
``offset``. When a batch falls outside, the window first slides, and if the data no longer
fits, ``h`` doubles (``2**k`` old bins merge into one new bin exactly, because bins stay
anchored at zero), so no statistic is ever approximated: every bin's count, sum and sum of
squares are exact. Updates are vectorised (``np.bincount``), with no Python loop per bin.

The activation search assigns each non-empty bin to the code of its mean, keeps the exact sum of
squares in the loss, and splits the bins that straddle a rounding threshold with a uniform model
that has the bin's mean and variance (:mod:`.binned`), so ``L(alpha)`` is continuous and exact for
every bin that does not straddle one.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .binned import BinnedObjective, HistogramBins
from .estimate import RowEstimate, run_search
from .grid import Grid
from .transform import PowerTransform

#: Rebuild the window instead of doubling the bin width more than this many times.
MAX_DOUBLINGS = 40


def fresh_width(lo: float, hi: float, bins: int) -> float:
    """Initial bin width for data in ``[lo, hi]``: ``(hi - lo) / (bins - 2)``, or a width of
    ``1e-6`` of the value for a constant first batch (later growth rebuilds the window)."""
    span = hi - lo
    return span / (bins - 2) if span > 0 else max(abs(lo), abs(hi), 1e-30) * 1e-6


def fits(width: float, offset: int, cur_lo: float, cur_hi: float, lo: float, hi: float, bins: int) -> bool:
    """True when data in ``[lo, hi]`` can be added to the window ``(width, offset)`` of a
    histogram with range ``[cur_lo, cur_hi]`` as it is (no regrid)."""
    if width == 0.0 or not (cur_hi > cur_lo or lo == hi == cur_lo):
        return False
    return math.floor(min(lo, cur_lo) / width) >= offset and math.floor(max(hi, cur_hi) / width) < offset + bins


def grown_window(width: float, cur_lo: float, cur_hi: float, lo: float, hi: float, bins: int
                 ) -> tuple[float, int, int]:
    """Bin width, first bin index and merge factor of a window covering a histogram's range
    ``[cur_lo, cur_hi]`` (bin width ``width``; 0 when empty) and new data in ``[lo, hi]``.

    An empty histogram gets :func:`fresh_width`. Otherwise the width doubles until the union
    range fits, so ``factor = 2**j`` old bins merge exactly into one new bin (bins are anchored
    at zero). ``factor = 0`` asks to move the old bins by their means instead: when the
    histogram holds a single value (its width is arbitrary) or the range grows by more than
    ``2**MAX_DOUBLINGS``.
    """
    u_lo, u_hi = min(lo, cur_lo), max(hi, cur_hi)
    if width == 0.0:
        w = fresh_width(u_lo, u_hi, bins)
        return w, math.floor(u_lo / w), 1
    if cur_hi > cur_lo or lo == hi == cur_lo:
        factor = 1
        for _ in range(MAX_DOUBLINGS):
            if math.floor(u_hi / width) - math.floor(u_lo / width) + 1 <= bins:
                return width, math.floor(u_lo / width), factor
            width *= 2.0
            factor *= 2
    w = fresh_width(u_lo, u_hi, bins)
    return w, math.floor(u_lo / w), 0


def moved_bins(stats: NDArray[np.float64], old_offset: int, cur_lo: float, cur_hi: float,
               width: float, offset: int, factor: int) -> NDArray[np.float64]:
    """A histogram's statistics (rows count, sum, sum of squares; ``old_offset`` its first bin)
    on the window ``(width, offset)`` of :func:`grown_window`: ``factor`` old bins per new bin
    (exact), or, with ``factor = 0``, each bin placed by its mean (clipped to ``[cur_lo,
    cur_hi]``). Moments stay exact either way."""
    bins = stats.shape[1]
    if factor > 0:  # every old bin (empty ones add zeros): no mask needed
        idx = np.floor_divide(int(old_offset) + np.arange(bins), factor) - offset
        moved = stats
    else:
        keep = stats[0] > 0
        means = np.clip(stats[1, keep] / stats[0, keep], cur_lo, cur_hi)
        idx = np.floor(means / width).astype(np.int64) - offset
        moved = stats[:, keep]
    np.clip(idx, 0, bins - 1, out=idx)
    flat_idx = (idx[None, :] + np.arange(3)[:, None] * bins).ravel()
    return np.bincount(flat_idx, moved.ravel(), 3 * bins).astype(np.float64, copy=False).reshape(3, bins)


class StreamingHistogram:
    """Exact-moment histogram whose range grows with the data.

    Args:
        bins: number of bins kept (resolution); the range can grow without limit.
    """

    def __init__(self, bins: int = 2048) -> None:
        if bins < 16:
            raise ValueError(f"bins must be at least 16, got {bins}")
        self.bins = int(bins)
        self.width = 0.0
        self.offset = 0
        self.count = np.zeros(self.bins)
        self.sum = np.zeros(self.bins)
        self.sumsq = np.zeros(self.bins)
        self.min = math.inf
        self.max = -math.inf

    @property
    def total(self) -> float:
        """Number of values seen."""
        return float(self.count.sum())

    @property
    def empty(self) -> bool:
        """True before any value was seen."""
        return self.width == 0.0

    def _index(self, x: NDArray[np.float64]) -> NDArray[np.int64]:
        return np.floor(x / self.width).astype(np.int64)

    def _regrid(self, lo: float, hi: float) -> None:
        """Make the window cover ``[lo, hi]`` and the current range (:func:`grown_window`),
        moving the bins there (:func:`moved_bins`)."""
        width, offset, factor = grown_window(self.width, self.min, self.max, lo, hi, self.bins)
        if not self.empty:
            stats = moved_bins(np.stack([self.count, self.sum, self.sumsq]), self.offset, self.min, self.max,
                               width, offset, factor)
            self.count, self.sum, self.sumsq = stats[0].copy(), stats[1].copy(), stats[2].copy()
        self.width, self.offset = width, offset

    def update(self, x: ArrayLike) -> None:
        """Add the finite values of ``x`` (any shape). Raises ValueError on NaN/Inf."""
        v = np.asarray(x, dtype=np.float64).ravel()
        if v.size == 0:
            return
        lo, hi = float(v.min()), float(v.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("the histogram received NaN or Inf values")
        new_lo, new_hi = min(lo, self.min), max(hi, self.max)
        if not fits(self.width, self.offset, self.min, self.max, lo, hi, self.bins):
            self._regrid(lo, hi)
        idx = np.clip(self._index(v) - self.offset, 0, self.bins - 1)
        self.count += np.bincount(idx, minlength=self.bins)
        self.sum += np.bincount(idx, v, self.bins)
        self.sumsq += np.bincount(idx, v * v, self.bins)
        self.min, self.max = new_lo, new_hi

    def merge(self, other: StreamingHistogram) -> None:
        """Add another histogram's statistics (for example from another process).

        Totals (count, sum, sum of squares, min, max) stay exact. Each of ``other``'s bins
        lands in the bin of ``self`` that holds its mean, which is exact when both share the
        bin grid; merging in a fixed order gives identical results on every process.
        """
        if other.empty:
            return
        if self.empty:
            self.__dict__.update(other.copy().__dict__)
            return
        lo, hi = min(self.min, other.min), max(self.max, other.max)
        self._regrid(lo, hi)
        o = other.copy()
        o._resample_to(self)
        self.count += o.count
        self.sum += o.sum
        self.sumsq += o.sumsq
        self.min, self.max = lo, hi

    def _resample_to(self, ref: StreamingHistogram) -> None:
        keep = self.count > 0
        means = self.sum[keep] / self.count[keep]
        idx = np.clip(np.floor(means / ref.width).astype(np.int64) - ref.offset, 0, ref.bins - 1)
        self.count = np.bincount(idx, self.count[keep], ref.bins).astype(np.float64)
        self.sum = np.bincount(idx, self.sum[keep], ref.bins).astype(np.float64)
        self.sumsq = np.bincount(idx, self.sumsq[keep], ref.bins).astype(np.float64)
        self.width, self.offset = ref.width, ref.offset

    def copy(self) -> StreamingHistogram:
        """A deep copy."""
        h = StreamingHistogram(self.bins)
        h.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v)
                           for k, v in self.__dict__.items()})
        return h

    def state(self) -> dict[str, NDArray[np.float64]]:
        """Plain arrays that :meth:`from_state` restores exactly."""
        meta = np.array([self.width, float(self.offset), self.min, self.max, float(self.bins)])
        return {"meta": meta, "count": self.count.copy(), "sum": self.sum.copy(),
                "sumsq": self.sumsq.copy()}

    @staticmethod
    def from_state(state: dict[str, NDArray[np.float64]]) -> StreamingHistogram:
        """Inverse of :meth:`state`."""
        meta = np.asarray(state["meta"], dtype=np.float64)
        h = StreamingHistogram(int(meta[4]))
        h.width, h.offset, h.min, h.max = float(meta[0]), int(meta[1]), float(meta[2]), float(meta[3])
        h.count = np.asarray(state["count"], dtype=np.float64).copy()
        h.sum = np.asarray(state["sum"], dtype=np.float64).copy()
        h.sumsq = np.asarray(state["sumsq"], dtype=np.float64).copy()
        return h

    def objective(self, grid: Grid, *, p: float = 1.0, loss_space: str = "original") -> BinnedObjective:
        """``L(alpha)`` over the histogram: each bin assigned by its mean, with the bins that
        straddle a rounding threshold split (:class:`~.binned.BinnedObjective`)."""
        if self.empty:
            raise ValueError("the histogram is empty: run calibration data through it first")
        keep = np.flatnonzero(self.count > 0)
        cnt, s1, s2 = self.count[keep], self.sum[keep], self.sumsq[keep]
        means = np.clip(s1 / cnt, self.min, self.max)
        left = (keep + self.offset).astype(np.float64) * self.width
        edges = np.stack([left, left + self.width], axis=1)
        transform = PowerTransform.fit(np.array([[self.min, self.max]]), p)
        lo = transform.forward(np.array([[self.min]]))[:, 0]
        hi = transform.forward(np.array([[self.max]]))[:, 0]
        bins = HistogramBins(means, cnt, s1, s2, edges, self.min, self.max)
        return BinnedObjective(bins, grid, transform, lo, hi, loss_space)

    def estimate(
        self, grid: Grid, *, p: float = 1.0, loss_space: str = "original",
        search: str = "golden", grid_points: int = 2000,
    ) -> RowEstimate:
        """REQuant's alpha search on the histogram."""
        obj = self.objective(grid, p=p, loss_space=loss_space)
        res = run_search(obj, search, grid_points)
        return RowEstimate(res.alpha, res.alpha * obj.s1, obj.z, res.mse, res.evaluations,
                           obj.transform, grid)
