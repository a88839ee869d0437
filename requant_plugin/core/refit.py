"""Least-squares rescaling of a rounded weight with its codes fixed.

With ``w_hat_c`` on a grid of scale ``s_c`` (codes fixed), ``lambda * w_hat_c`` lies on the same codes'
grid of scale ``lambda s_c`` (``lambda**p s_c`` in the transformed space, ``T^-1`` being homogeneous of
degree ``1/p``), and ``(w_c - lambda w_hat_c)^T G (w_c - lambda w_hat_c)`` is lowest at
``lambda_c = w_hat_c^T G w_c / w_hat_c^T G w_hat_c``: never above the error at ``lambda = 1``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["REFIT_BOUNDS", "refit_scale"]

#: ``lambda`` is kept within these bounds (a channel whose rounding lost nearly all its weight would
#: otherwise be stretched by an unbounded factor fitted to noise).
REFIT_BOUNDS: tuple[float, float] = (0.5, 2.0)


def refit_scale(
    target: NDArray[np.floating], w_hat: NDArray[np.floating], gram: NDArray[np.floating], *,
    per_channel: bool = True,
) -> NDArray[np.float64]:
    """``lambda`` ``(C,)`` minimising ``sum_c (w_c - lambda_c w_hat_c)^T G (w_c - lambda_c w_hat_c)``.

    ``target``, ``w_hat``: ``(C, n)``; ``gram``: ``(n, n)`` or ``(groups, n, n)`` (each group of
    ``C / groups`` channels its own); ``per_channel=False``: one ``lambda`` for every channel (repeated).
    A channel with ``w_hat_c^T G w_hat_c = 0`` keeps ``1``; the result is clipped to :data:`REFIT_BOUNDS`.
    """
    w = np.asarray(target, dtype=np.float64)
    q = np.asarray(w_hat, dtype=np.float64)
    g = np.asarray(gram, dtype=np.float64)
    g = g[None] if g.ndim == 2 else g
    c = w.shape[0]
    if q.shape != w.shape or c % g.shape[0] or g.shape[1:] != (w.shape[1], w.shape[1]):
        raise ValueError(f"refit_scale: target {w.shape}, w_hat {q.shape} and gram {g.shape} do not match")
    per = c // g.shape[0]
    num, den = np.empty(c), np.empty(c)
    for gi in range(g.shape[0]):
        sl = slice(gi * per, (gi + 1) * per)
        qg = q[sl] @ g[gi]
        num[sl] = np.einsum("ij,ij->i", qg, w[sl])
        den[sl] = np.einsum("ij,ij->i", qg, q[sl])
    if not per_channel:
        num, den = np.full(c, num.sum()), np.full(c, den.sum())
    ok = den > 0
    lam = np.where(ok, num / np.where(ok, den, 1.0), 1.0)
    return np.clip(lam, *REFIT_BOUNDS)
