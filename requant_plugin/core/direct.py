"""Direct fake quantization of short rows: ``L(alpha)`` in ``O(n)`` per candidate (pure NumPy).

The prefix-sum objective costs ``2**b`` binary searches per candidate and row, whatever the row
length ``n``; a row shorter than that (a depthwise 3x3 channel has 9 weights) is cheaper to quantize
outright: ``q = clip(round(T(x) / s), qmin - z, qmax - z)``, level ``v = alpha**e * c[q]``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["direct_is_cheaper", "fake_quant_sse_bias"]

def direct_is_cheaper(n: int, levels: int) -> bool:
    """Whether ``n`` fake quantizations per candidate and row cost less than ``levels - 1`` binary
    searches (the measured crossover is near ``n = levels`` at 4 and 8 bits)."""
    return n < levels


def fake_quant_sse_bias(
    y: NDArray[np.float64], x: NDArray[np.float64], s1: NDArray[np.float64], a_min: NDArray[np.float64],
    coef: NDArray[np.float64], alpha: NDArray[np.float64], exponent: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``SSE = sum_i d_i**2`` and ``bias = sum_i d_i`` with ``d = alpha**e c[q(y)] - x``, ``(R, K)``.

    ``y``: ``(R, n)`` values in the grid's (transformed) space; ``x``: the same values in the loss
    space; ``s1``: ``(R,)`` base scales; ``a_min``: ``(R,)`` lowest code minus the zero point;
    ``coef``: ``(R, L)`` levels at ``alpha = 1`` in the loss space; ``alpha``: ``(R, K)``.
    A quotient within float round-off of a midpoint is the exact tie it stands for (half to even),
    as in the prefix-sum objective's thresholds.
    """
    u = y[:, None, :] / (alpha * s1[:, None])[:, :, None]  # (R, K, n)
    half = np.floor(u) + 0.5
    tie = np.abs(u - half) <= 1e-12 * np.maximum(1.0, np.abs(u))
    u = np.where(tie, half, u)
    q = np.rint(u)  # half to even
    top = a_min[:, None, None] + (coef.shape[1] - 1)
    idx = (np.clip(q, a_min[:, None, None], top) - a_min[:, None, None]).astype(np.intp)
    r_, k_, n_ = idx.shape
    lv = np.take_along_axis(coef, idx.reshape(r_, -1), axis=1).reshape(r_, k_, n_)
    d = (alpha ** exponent)[:, :, None] * lv - x[:, None, :]
    return np.einsum("rkn,rkn->rk", d, d), d.sum(axis=2)
