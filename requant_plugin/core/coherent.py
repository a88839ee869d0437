"""The coherent output-error objective for weight ranges (pure NumPy).

Weight MSE is blind to the *sum* of a channel's errors, which a layer's output sees whenever
its inputs have a non-zero mean (post-ReLU activations). This objective adds that term, with
the mean-to-variance ratio ``rho`` of the inputs as its only parameter.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .objective import RangeObjective, all_rows_then_select, code_sse


class CoherentErrorObjective:
    """Weight MSE plus the coherent part of the layer's output error, per row (channel).

    For output channel weights ``w_i`` with errors ``d_i = w_hat_i - w_i`` and inputs ``x_i``
    that are independent with mean ``mu`` and variance ``sigma**2``, the output error
    ``e = sum_i d_i x_i`` has ``E[e**2] = sigma**2 * sum_i d_i**2 + mu**2 * (sum_i d_i)**2``.
    Divided by ``sigma**2 * n`` this is ``L(alpha) = (sum_i d_i**2 + rho * (sum_i d_i)**2) / n``
    with ``rho = mu**2 / sigma**2`` (``rho = 0``: REQuant's weight MSE). Rounding errors are
    zero-mean and cancel in ``sum_i d_i``; clipping errors all shrink the large weights and do
    not, which the plain weight MSE does not see. Both sums come exactly from the core
    objective's per-code statistics: ``sum_i d_i = sum_k (v_k n_k - S1_k)``. Implements the
    core search's ``Objective`` protocol (no least-squares polish: ``refit`` returns ``alpha``).
    """

    def __init__(self, base: RangeObjective, rho: float) -> None:
        self.base, self.rho = base, float(rho)
        self.rows, self.n, self.grid = base.rows, base.n, base.grid
        self.evaluations = base.evaluations

    def __call__(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        out = self.base.chunked(alpha, self._chunk)
        self.evaluations = self.base.evaluations
        return out

    def rows_call(self, alpha: NDArray[np.float64], rows: NDArray[np.intp]) -> NDArray[np.float64]:
        """``L`` of the rows ``rows`` only, ``alpha`` of shape ``(len(rows), K)``."""
        if not self.base.by_parts:
            return all_rows_then_select(self, self.rows, alpha, rows)
        out = self.base.rows_in_blocks(alpha, rows, self._parts)
        self.evaluations = self.base.evaluations
        return out

    def _parts(self, alpha: NDArray[np.float64], rows: NDArray[np.intp] | None) -> NDArray[np.float64]:
        sse, bias = self.base.sse_bias_rows(alpha, rows)
        sel = slice(None) if rows is None else rows
        return (np.maximum(sse, 0.0) + self.rho * bias * bias) / self.base.total_weight[sel][:, None]

    def _chunk(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.base.by_parts:
            return self._parts(alpha, None)
        c = self.base.codes(alpha)
        v = self.base.levels(alpha, c)
        bias = np.sum(v * c.count - c.sum1, axis=2)
        return (code_sse(c, v) + self.rho * bias * bias) / self.base.total_weight[:, None]

    def refit(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(alpha, dtype=np.float64)


__all__ = ["CoherentErrorObjective"]
