"""The signed power transform that turns a uniform grid into a non-uniform one.

``T(w) = sign(w) * (|w| / m) ** p`` with ``m = max|w|`` (so ``T(w)`` lies in [-1, 1]) and its
exact inverse ``T^-1(y) = m * sign(y) * |y| ** (1 / p)``. With ``p = 1/2`` this is REQuant's
``sign(w) * sqrt(|w|)`` up to the factor ``m ** -1/2``, which a range-proportional uniform
quantizer ignores. A grid uniform in ``y`` has levels ``m * sign(y_k) * |y_k| ** (1/p)`` in
``w``: dense near zero, sparse in the tails. ``p = 1`` is the identity (no normalisation), so
the transformed path reproduces the plain one bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class PowerTransform:
    """``y = sign(w) * (|w| / m) ** p`` per row; ``m`` has one entry per row (channel).

    Attributes:
        p: exponent in (0, 1]; 1 means identity.
        m: normaliser per row (``max|w|``, 1 where a row is all zero).
    """

    p: float
    m: NDArray[np.float64]

    @staticmethod
    def identity(rows: int = 1) -> PowerTransform:
        """The identity transform (``p = 1``, ``m = 1``)."""
        return PowerTransform(1.0, np.ones(rows))

    @staticmethod
    def fit(rows: NDArray[np.floating], p: float) -> PowerTransform:
        """Transform for 2-D ``rows`` (one row per channel) with exponent ``p``."""
        if not 0.0 < p <= 1.0:
            raise ValueError(f"the transform exponent p must be in (0, 1], got {p}")
        if p == 1.0:
            return PowerTransform.identity(rows.shape[0])
        m = np.max(np.abs(rows), axis=1).astype(np.float64) if rows.size else np.ones(rows.shape[0])
        return PowerTransform(float(p), np.where(m > 0, m, 1.0))

    @property
    def is_identity(self) -> bool:
        """True for ``p = 1``."""
        return self.p == 1.0

    def _m(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return self.m.reshape((-1,) + (1,) * (x.ndim - 1)) if x.ndim else self.m

    def forward(self, w: ArrayLike) -> NDArray[np.float64]:
        """``T(w)``; ``w`` has rows along axis 0 (or is broadcastable against ``m[:, None]``)."""
        w = np.asarray(w, dtype=np.float64)
        if self.is_identity:
            return w
        return np.sign(w) * (np.abs(w) / self._m(w)) ** self.p

    def inverse(self, y: ArrayLike) -> NDArray[np.float64]:
        """``T^-1(y) = m * sign(y) * |y| ** (1/p)`` (for ``p = 1/2``: ``m * y * |y|``)."""
        y = np.asarray(y, dtype=np.float64)
        if self.is_identity:
            return y
        if self.p == 0.5:
            return self._m(y) * y * np.abs(y)
        return self._m(y) * np.sign(y) * np.abs(y) ** (1.0 / self.p)

    def inverse_inplace(self, y: NDArray[np.float64]) -> NDArray[np.float64]:
        """:meth:`inverse` (the same float operations), overwriting the float64 array ``y`` where the
        exponent allows it (``p = 1`` and ``p = 1/2``); a new array otherwise."""
        if self.is_identity:
            return y
        if self.p != 0.5:
            return self.inverse(y)
        mag = np.abs(y)
        y *= self._m(y)  # m * y * |y|, as inverse computes it
        y *= mag
        return y

    def inverse_rows(self, y: NDArray[np.float64], rows: NDArray[np.intp] | None = None) -> NDArray[np.float64]:
        """:meth:`inverse` of ``y`` whose axis 0 holds the rows ``rows`` (default all) of ``m``."""
        if rows is None or self.is_identity:
            return self.inverse(y)
        return PowerTransform(self.p, self.m[rows]).inverse(y)

