"""One factorisation of a damped Gram matrix, shared by the compensated target and the feedback rounding.

``H = G + lam I`` with ``lam = damp * mean(diag G)`` over the live inputs (``G_jj > 0``); an input that is
always zero (dead) gets ``H_jj = 1 + lam`` and no coupling. With the permutation ``P`` of the rounding order,
``(P^T H P)^-1 = U^T U`` (``U`` upper triangular, :func:`~.linalg.upper_cholesky_of_inverse`): the feedback
rounding walks the columns in that order with ``U``, and ``H^-1 b = P U^T U P^T b`` solves the target's
normal equations with two triangular products instead of a second factorisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .linalg import upper_cholesky_of_inverse

__all__ = ["FEEDBACK_ORDERS", "DampedFactor", "live_gram"]

#: column orders of the feedback rounding: ``"energy"`` (largest ``G_jj`` first) or ``"input"`` (as stored)
FEEDBACK_ORDERS: tuple[str, ...] = ("input", "energy")
#: added to ``damp`` (relative to the mean live diagonal) when the damped matrix is still not positive definite
_RETRY_DAMP = 0.1


def live_gram(gram: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.bool_], float]:
    """``(h, dead, scale)``: a float64 copy of ``gram`` with each dead input's (``G_jj <= 0``) row and column
    replaced by ``e_j``, the dead mask, and ``scale`` = the mean live diagonal (1 when no input is live)."""
    h = np.array(gram, dtype=np.float64)
    diag = np.diag(h).copy()
    dead = diag <= 0
    h[dead, :], h[:, dead] = 0.0, 0.0
    h[dead, dead] = 1.0
    return h, dead, float(np.mean(diag[~dead])) if (~dead).any() else 1.0


@dataclass(frozen=True)
class DampedFactor:
    """``H = G + lam I`` (dead inputs: ``H_jj = 1 + lam``) in the column order ``perm``:
    ``H[perm][:, perm]^-1 = upper^T upper``.

    Attributes:
        perm: the column order (``"energy"``: by decreasing ``G_jj``, stable).
        upper: ``U``, ``(n, n)`` upper triangular.
        lam: the damping added to the diagonal.
        dead: ``(n,)`` True where ``G_jj <= 0``.
        damp, order: what the factor was made with (checked by its users).
    """

    perm: NDArray[np.intp]
    upper: NDArray[np.float64]
    lam: float
    dead: NDArray[np.bool_]
    damp: float
    order: str

    @classmethod
    def of(cls, gram: NDArray[np.floating], damp: float = 0.01, order: str = "energy") -> DampedFactor:
        """The factor of one ``(n, n)`` symmetric positive semi-definite ``gram``."""
        if order not in FEEDBACK_ORDERS:
            raise ValueError(f"unknown order {order!r}: valid values are {list(FEEDBACK_ORDERS)}")
        if damp < 0 or not np.isfinite(damp):
            raise ValueError(f"damp must be finite and >= 0, got {damp}")
        g = np.asarray(gram, dtype=np.float64)
        n = g.shape[0]
        if g.shape != (n, n):
            raise ValueError(f"gram must be square, got {g.shape}")
        perm = np.argsort(-np.diag(g), kind="stable") if order == "energy" else np.arange(n)
        live, dead, mean_diag = live_gram(g)
        h = live[np.ix_(perm, perm)]
        lam = damp * mean_diag
        h[np.diag_indices(n)] += lam
        try:
            upper = upper_cholesky_of_inverse(h)
        except np.linalg.LinAlgError:
            h[np.diag_indices(n)] += _RETRY_DAMP * mean_diag
            lam += _RETRY_DAMP * mean_diag
            upper = upper_cholesky_of_inverse(h)
        return cls(perm, upper, lam, dead, float(damp), order)

    @property
    def n(self) -> int:
        """Inputs."""
        return int(self.upper.shape[0])

    def solve(self, rhs: NDArray[np.floating]) -> NDArray[np.float64]:
        """``H^-1 rhs`` for ``rhs`` ``(n, k)``: ``P U^T U P^T rhs``."""
        b = np.asarray(rhs, dtype=np.float64)[self.perm]
        y = self.upper.T @ (self.upper @ b)
        out = np.empty_like(y)
        out[self.perm] = y
        return out

    def check(self, n: int, damp: float, order: str) -> None:
        """Raise ValueError unless the factor is of an ``n``-input Gram matrix made with ``damp`` and ``order``."""
        if (self.n, self.damp, self.order) != (n, float(damp), order):
            raise ValueError(f"the damped factor was made for n={self.n}, damp={self.damp}, order={self.order!r}, "
                             f"not n={n}, damp={damp}, order={order!r}: make it with "
                             "DampedFactor.of(gram, damp, order)")
