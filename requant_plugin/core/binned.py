"""The range objective on a histogram, with bins that straddle a rounding threshold split (pure NumPy).

:class:`RangeObjective` on a histogram assigns each bin wholly to the code of its mean. A bin that
straddles a rounding threshold ``t`` (between levels ``v_L < v_U``) then charges its members on
the far side of ``t`` to the wrong level, so ``L(alpha)`` jumps whenever a bin mean crosses a
threshold: with about 8-16 bins per quantization step this is a ripple of 1-2 % plus spikes
where a heavy bin crosses, in the flat region where the minimum lies (at 7 bits), and the
search's argmin wanders with it.

:class:`BinnedObjective` models each bin's members as uniform on ``[m - h, m + h]``, centred on
the bin mean ``m`` with the bin's variance (``h = sqrt(3 var)``), cut to the bin's edges and the
data range. It keeps every exact moment and adds, per threshold, the change of the squared
error when the members beyond ``t`` move to the other level:

    dSSE = (v_U - v_L) * (n_up * (v_U + v_L) - 2 * S1_up)     (bin assigned to v_L)
    dSSE = (v_L - v_U) * (n_dn * (v_L + v_U) - 2 * S1_dn)     (bin assigned to v_U)

with ``n_up = n (m + h - t) / (2 h)``, ``S1_up = n_up (t + m + h) / 2`` (and the mirror images
below ``t``). Because the model has the bin's exact mean, both assignments give the same value
when ``t`` crosses ``m``: ``L(alpha)`` is continuous. A bin of one repeated value (``var = 0``)
stays a point mass, so discrete data (e.g. 8-bit images) is still exact. Exact for bins that
hold at most one threshold (bins are much finer than a step for any useful ``alpha``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .grid import Grid
from .objective import Codes, PointMoments, RangeObjective, code_sse
from .transform import PowerTransform


@dataclass(frozen=True)
class HistogramBins:
    """The non-empty bins of one histogram, sorted ascending (original space).

    Attributes:
        means, counts, sums, sumsq: per bin ``(n,)``: mean, count, sum and sum of squares.
        edges: ``(n, 2)`` lower and upper edge of each bin.
        data_min, data_max: the range of the data (no member lies outside).
    """

    means: NDArray[np.float64]
    counts: NDArray[np.float64]
    sums: NDArray[np.float64]
    sumsq: NDArray[np.float64]
    edges: NDArray[np.float64]
    data_min: float
    data_max: float

    @property
    def moments(self) -> PointMoments:
        """The bins as one row of weighted points for :class:`RangeObjective`."""
        return PointMoments(self.counts[None, :], self.sums[None, :], self.sumsq[None, :])


class BinnedObjective(RangeObjective):
    """``L(alpha)`` of one histogram (one row), with straddling bins split (module docstring).

    Args:
        bins: the histogram's non-empty bins (:class:`HistogramBins`).
        grid, transform, lo, hi, loss_space: as for :class:`RangeObjective` (one row).

    The correction applies with the loss in the original space (the activation observers' case);
    in the transformed loss space this is plain :class:`RangeObjective`.
    """

    def __init__(
        self, bins: HistogramBins, grid: Grid, transform: PowerTransform,
        lo: NDArray[np.float64], hi: NDArray[np.float64], loss_space: str = "original",
    ) -> None:
        super().__init__(bins.means[None, :], grid, transform, lo, hi, loss_space, moments=bins.moments)
        means, counts = bins.means, bins.counts
        var = bins.sumsq / counts - means * means
        var = np.where(var > 1e-12 * means * means, var, 0.0)  # round-off of a point mass is no spread
        left = np.maximum(bins.edges[:, 0], bins.data_min)
        right = np.minimum(bins.edges[:, 1], bins.data_max)
        half = np.minimum(np.sqrt(3.0 * var), np.minimum(means - left, right - means))
        self._split = self.loss_space == "original"
        self._m, self._n = means, counts
        self._h = np.maximum(half, 0.0)
        self._lo_sup, self._hi_sup = means - self._h, means + self._h

    def _mse_chunk(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        c = self.codes(alpha)
        v = self.levels(alpha, c)
        sse = code_sse(c, v)
        if self._split:
            sse = np.maximum(sse + self._straddle(c, v), 0.0)
        return sse / self.total_weight[:, None]

    def _straddle(self, c: Codes, v: NDArray[np.float64]) -> NDArray[np.float64]:
        """Sum over thresholds of ``dSSE`` (module docstring), ``(1, K)``: the thresholds and the
        side each bin was assigned to come from the code assignment itself (``c``)."""
        t = c.thresholds[0]  # (K, L-1)
        j = np.minimum(np.searchsorted(self._hi_sup, t, side="right"), self._m.size - 1)
        m, h, n = self._m[j], self._h[j], self._n[j]
        inside = (self._lo_sup[j] < t) & (t < self._hi_sup[j]) & (h > 0)
        hs = np.where(inside, h, 1.0)
        v_lo, v_hi = v[0, :, :-1], v[0, :, 1:]
        lower = j < c.split[0]  # the bin sits with v_lo; its members above t move up
        far = np.where(lower, (m + h - t), (t - (m - h))) / (2.0 * hs)
        n_far = n * np.clip(far, 0.0, 1.0)
        s_far = n_far * np.where(lower, t + m + h, m - h + t) / 2.0
        step = np.where(lower, v_hi - v_lo, v_lo - v_hi)
        d = step * (n_far * (v_lo + v_hi) - 2.0 * s_far)
        return np.sum(np.where(inside, d, 0.0), axis=1)[None, :]

    def breakpoints(self, max_points: int) -> NDArray[np.float64] | None:
        """``None`` with straddling bins split: ``L`` is continuous, there is no sawtooth to chase."""
        return None if self._split else super().breakpoints(max_points)


__all__ = ["BinnedObjective", "HistogramBins"]
