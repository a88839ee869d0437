"""The ridge of the compensated target, chosen per layer by two-fold cross-validation.

:func:`~.target.compensated_weight` pulls ``W*`` towards the float weight by ``lambda = damp * mean(diag H)``.
Fitted on one fold of the calibration rows and scored on the other, a damp that over-fits the upstream error
of the fitting fold predicts the other fold's float output worse: ``E_B||W x_f - W*_A x_q||^2
= tr(W*_A G_B W*_A^T) - 2 tr(W^T W*_A C_B) + E_B||W x_f||^2``, whose last term no damp changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["TIE", "DampChoice", "TargetFold", "cross_validated_damp", "held_out_error", "projected"]

#: held-out errors this close (relative to the largest magnitude) are a tie, won by the earlier candidate
TIE = 1e-9


@dataclass(frozen=True)
class TargetFold:
    """One fold's mean statistics, per group: ``gram`` ``(g, n, n)`` ``E[x_q x_q^T]`` and exactly one of
    ``cross`` ``(g, n, n)`` ``E[x_q x_f^T]`` or ``cross_out`` ``(g, n, C/g)`` ``E[x_q y_f^T]`` (as in
    :func:`~.target.compensated_weight`); ``rows``: how many rows they average."""

    gram: NDArray[np.float64]
    cross: NDArray[np.float64] | None = None
    cross_out: NDArray[np.float64] | None = None
    rows: int = 0


@dataclass(frozen=True)
class DampChoice:
    """The chosen ``damp`` and, per candidate (in the order given), its held-out error summed over both
    directions, up to the constant ``E||W x_f||^2`` of each fold."""

    damp: float
    candidates: tuple[float, ...]
    errors: tuple[float, ...]


def projected(fold: TargetFold, weight: NDArray[np.floating]) -> TargetFold:
    """``fold`` with ``cross`` replaced by ``cross_out = C W_g^T`` per group (as is when it has ``cross_out``): the
    only form of the cross term the fit and the score read, made once instead of once per candidate."""
    if fold.cross is None:
        return fold
    w = np.asarray(weight, dtype=np.float64)
    groups = fold.gram.shape[0]
    per = w.shape[0] // groups
    out = np.stack([fold.cross[gi] @ w[gi * per:(gi + 1) * per].T for gi in range(groups)])
    return TargetFold(fold.gram, None, out, fold.rows)


@dataclass(frozen=True)
class _Ready:
    """One group of a projected fold, made ready for the fits of every candidate: ``base`` the Gram matrix with
    each dead input's (``G_jj <= 0``) row and column replaced by ``e_j`` (as :class:`~.damped.DampedFactor` does),
    ``rhs`` the cross term ``C W_g^T`` with a dead input's row replaced by its float weight, ``scale`` the mean
    live diagonal (``lam = damp * scale``)."""

    base: NDArray[np.float64]
    rhs: NDArray[np.float64]
    w_t: NDArray[np.float64]
    gram: NDArray[np.float64]
    cross_out: NDArray[np.float64]
    scale: float

    @classmethod
    def of(cls, fold: TargetFold, w: NDArray[np.float64]) -> list[_Ready]:
        assert fold.cross_out is not None
        groups = fold.gram.shape[0]
        per = w.shape[0] // groups
        out = []
        for gi in range(groups):
            gram = np.asarray(fold.gram[gi], dtype=np.float64)
            w_t = w[gi * per:(gi + 1) * per].T
            diag = np.diag(gram)
            dead = diag <= 0
            base, rhs = gram.copy(), np.array(fold.cross_out[gi], dtype=np.float64)
            base[dead, :], base[:, dead] = 0.0, 0.0
            base[dead, dead] = 1.0
            rhs[dead] = w_t[dead]
            scale = float(np.mean(diag[~dead])) if (~dead).any() else 1.0
            out.append(cls(base, rhs, w_t, gram, np.asarray(fold.cross_out[gi], dtype=np.float64), scale))
        return out

    def fit(self, damp: float) -> NDArray[np.float64]:
        """``W*^T = (H + lam I)^-1 (C W^T + lam W^T)`` (one LU solve: cheaper than the damped factor's
        Cholesky of the inverse, which only the feedback rounding needs)."""
        lam = damp * self.scale
        h = self.base.copy()
        h[np.diag_indices_from(h)] += lam
        return np.asarray(np.linalg.solve(h, self.rhs + lam * self.w_t), dtype=np.float64)

    def score(self, v_t: NDArray[np.float64]) -> float:
        """``tr(V G V^T) - 2 tr(V C_out)`` of this fold's statistics for ``V^T`` ``(n, C/g)``."""
        return float(np.einsum("ij,ij->", self.gram @ v_t, v_t)) - 2.0 * float(np.einsum("ij,ij->", v_t,
                                                                                         self.cross_out))


def _error(fit: list[_Ready], score: list[_Ready], damp: float) -> float:
    return sum(sc.score(ft.fit(damp)) for ft, sc in zip(fit, score, strict=True))


def held_out_error(weight: NDArray[np.floating], fit: TargetFold, score: TargetFold, damp: float) -> float:
    """``E_score||W x_f - W*_fit x_q||^2 - E_score||W x_f||^2`` summed over output channels, with ``W*_fit`` the
    target of ``damp`` on fold ``fit``: ``tr(V G V^T) - 2 tr(V C_out)`` per group (``C_out = C W^T``)."""
    w = np.asarray(weight, dtype=np.float64)
    return _error(_Ready.of(projected(fit, w), w), _Ready.of(projected(score, w), w), damp)


def cross_validated_damp(weight: NDArray[np.floating], folds: tuple[TargetFold, TargetFold],
                         damps: Sequence[float]) -> DampChoice:
    """The candidate of ``damps`` with the lowest :func:`held_out_error` fitted on each fold and scored on the
    other; of errors within :data:`TIE` (relative) of the lowest, the first (e.g. a first layer, whose float and
    quantized inputs agree: every damp gives ``W* = W``); one candidate is returned as it is, without a fit."""
    candidates = tuple(float(d) for d in damps)
    if not candidates:
        raise ValueError("damps must hold at least one candidate")
    if len(candidates) == 1:
        return DampChoice(candidates[0], candidates, (0.0,))
    w = np.asarray(weight, dtype=np.float64)
    a, b = (_Ready.of(projected(f, w), w) for f in folds)
    errors = tuple(_error(a, b, d) + _error(b, a, d) for d in candidates)
    if not all(np.isfinite(errors)):
        raise ValueError(f"the held-out errors of damps {candidates} are not all finite ({errors}): the folds' "
                         "statistics hold NaN/Inf")
    low = min(errors)
    first = next(i for i, e in enumerate(errors) if e <= low + TIE * max(map(abs, errors)))
    return DampChoice(candidates[first], candidates, errors)
