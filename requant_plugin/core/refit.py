"""Least-squares rescaling of a rounded weight with its codes fixed.

With ``w_hat_c`` on a grid of scale ``s_c`` (codes fixed), ``lambda * w_hat_c`` lies on the same codes'
grid of scale ``lambda s_c`` (``lambda**p s_c`` in the transformed space, ``T^-1`` being homogeneous of
degree ``1/p``), and ``(w_c - lambda w_hat_c)^T G (w_c - lambda w_hat_c)`` is lowest at
``lambda_c = w_hat_c^T G w_c / w_hat_c^T G w_hat_c``: never above the error at ``lambda = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["REFIT_BOUNDS", "RefitTerms", "refit_scale", "refit_terms"]

#: ``lambda`` is kept within these bounds (a channel whose rounding lost nearly all its weight would
#: otherwise be stretched by an unbounded factor fitted to noise).
REFIT_BOUNDS: tuple[float, float] = (0.5, 2.0)


@dataclass(frozen=True)
class RefitTerms:
    """Per channel ``num = w_hat^T G w`` and ``den = w_hat^T G w_hat`` (``(C,)`` each)."""

    num: NDArray[np.float64]
    den: NDArray[np.float64]

    def scale(self, per_channel: bool = True) -> NDArray[np.float64]:
        """``lambda = num / den`` per channel (``per_channel=False``: of the sums, repeated); ``1`` where
        ``den = 0``; clipped to :data:`REFIT_BOUNDS`."""
        num, den = (self.num, self.den) if per_channel else (np.full_like(self.num, self.num.sum()),
                                                            np.full_like(self.den, self.den.sum()))
        ok = den > 0
        return np.clip(np.where(ok, num / np.where(ok, den, 1.0), 1.0), *REFIT_BOUNDS)

    def error(self, error_at_one: NDArray[np.floating], lam: NDArray[np.floating]) -> NDArray[np.float64]:
        """``e_c(lambda) = (w - lambda w_hat)^T G (w - lambda w_hat)`` from ``e_c(1)``: ``e(1) + 2 (1 - lambda)
        (num - den) + (1 - lambda)^2 den`` (no second product with ``G``)."""
        d = 1.0 - np.asarray(lam, dtype=np.float64)
        return np.asarray(error_at_one, dtype=np.float64) + 2.0 * d * (self.num - self.den) + d * d * self.den


def refit_terms(target: NDArray[np.floating], w_hat: NDArray[np.floating], gram: NDArray[np.floating]) -> RefitTerms:
    """:class:`RefitTerms` of ``target``, ``w_hat`` ``(C, n)`` under ``gram`` ``(n, n)`` or ``(groups, n, n)`` (each
    group of ``C / groups`` channels its own); ``w_hat G`` in float32 (float64 where float32 overflows), the one
    product with ``G``."""
    w = np.asarray(target, dtype=np.float64)
    q = np.asarray(w_hat, dtype=np.float64)
    g = np.asarray(gram)
    g = g[None] if g.ndim == 2 else g
    c = w.shape[0]
    if q.shape != w.shape or c % g.shape[0] or g.shape[1:] != (w.shape[1], w.shape[1]):
        raise ValueError(f"refit_scale: target {w.shape}, w_hat {q.shape} and gram {g.shape} do not match")
    per = c // g.shape[0]
    num, den = np.empty(c), np.empty(c)
    for gi in range(g.shape[0]):
        sl = slice(gi * per, (gi + 1) * per)
        with np.errstate(over="ignore", invalid="ignore"):
            qg = (q[sl].astype(np.float32) @ g[gi].astype(np.float32, copy=False)).astype(np.float64)
        if not np.isfinite(qg).all():  # beyond float32's range: the float64 product
            qg = q[sl] @ np.asarray(g[gi], dtype=np.float64)
        num[sl] = np.einsum("ij,ij->i", qg, w[sl])
        den[sl] = np.einsum("ij,ij->i", qg, q[sl])
    return RefitTerms(num, den)


def refit_scale(
    target: NDArray[np.floating], w_hat: NDArray[np.floating], gram: NDArray[np.floating], *,
    per_channel: bool = True,
) -> NDArray[np.float64]:
    """``lambda`` ``(C,)`` minimising ``sum_c (w_c - lambda_c w_hat_c)^T G (w_c - lambda_c w_hat_c)``.

    ``target``, ``w_hat``: ``(C, n)``; ``gram``: ``(n, n)`` or ``(groups, n, n)`` (each group of
    ``C / groups`` channels its own); ``per_channel=False``: one ``lambda`` for every channel (repeated).
    A channel with ``w_hat_c^T G w_hat_c = 0`` keeps ``1``; the result is clipped to :data:`REFIT_BOUNDS`.
    """
    return refit_terms(target, w_hat, gram).scale(per_channel)
