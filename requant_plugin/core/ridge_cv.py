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

from .damped import live_gram

__all__ = ["TIE", "DampChoice", "TargetFold", "cross_validated_damp", "held_out_error", "projected"]

#: held-out errors this close (relative to the largest magnitude) are a tie, won by the earlier candidate
TIE = 1e-9


@dataclass(frozen=True)
class TargetFold:
    """One fold's mean statistics, per group: ``gram`` ``(g, n, n)`` ``E[x_q x_q^T]`` and exactly one of
    ``cross`` ``(g, n, n)`` ``E[x_q x_f^T]`` or ``cross_out`` ``(g, n, C/g)`` ``E[x_q y_f^T]`` (as in
    :func:`~.target.compensated_weight`); ``rows``: how many rows they average. Optionally the rows themselves
    (kept where they are fewer than the inputs, a rank-deficient ``gram``): ``row_q`` ``(g, rows, n)`` the
    quantized inputs and ``row_f`` the float inputs ``(g, rows, n)`` (with ``cross``) or outputs
    ``(g, rows, C/g)`` (with ``cross_out``); the fits then solve in the row space (Woodbury)."""

    gram: NDArray[np.float64]
    cross: NDArray[np.float64] | None = None
    cross_out: NDArray[np.float64] | None = None
    rows: int = 0
    row_q: NDArray[np.floating] | None = None
    row_f: NDArray[np.floating] | None = None


@dataclass(frozen=True)
class DampChoice:
    """The chosen ``damp`` and, per candidate (in the order given), its held-out error summed over both
    directions, up to the constant ``E||W x_f||^2`` of each fold."""

    damp: float
    candidates: tuple[float, ...]
    errors: tuple[float, ...]


def projected(fold: TargetFold, weight: NDArray[np.floating]) -> TargetFold:
    """``fold`` with ``cross`` replaced by ``cross_out = C W_g^T`` per group (and ``row_f`` by the float outputs
    ``X_f W_g^T``; as is when it has ``cross_out``): the only form of the cross term the fit and the score read,
    made once instead of once per candidate."""
    if fold.cross is None:
        return fold
    w = np.asarray(weight, dtype=np.float64)
    groups = fold.gram.shape[0]
    per = w.shape[0] // groups
    out = np.stack([fold.cross[gi] @ w[gi * per:(gi + 1) * per].T for gi in range(groups)])
    row_f = None if fold.row_f is None else np.stack(
        [np.asarray(fold.row_f[gi], dtype=np.float64) @ w[gi * per:(gi + 1) * per].T for gi in range(groups)])
    return TargetFold(fold.gram, None, out, fold.rows, fold.row_q, row_f)


@dataclass(frozen=True)
class _Ready:
    """One group of a projected fold, made ready for the fits of every candidate: ``base`` the Gram matrix with
    each dead input's (``G_jj <= 0``) row and column replaced by ``e_j`` (:func:`~.damped.live_gram`, as
    :class:`~.damped.DampedFactor` does),
    ``rhs`` the cross term ``C W_g^T`` with a dead input's row replaced by its float weight, ``scale`` the mean
    live diagonal (``lam = damp * scale``); ``x``, ``y``: the fold's rows ``(r, n)`` and float outputs
    ``(r, C/g)`` where it kept them."""

    base: NDArray[np.float64]
    rhs: NDArray[np.float64]
    w_t: NDArray[np.float64]
    gram: NDArray[np.float64]
    cross_out: NDArray[np.float64]
    scale: float
    x: NDArray[np.float64] | None = None
    y: NDArray[np.float64] | None = None

    @classmethod
    def of(cls, fold: TargetFold, w: NDArray[np.float64]) -> list[_Ready]:
        assert fold.cross_out is not None
        groups = fold.gram.shape[0]
        per = w.shape[0] // groups
        out = []
        for gi in range(groups):
            gram = np.asarray(fold.gram[gi], dtype=np.float64)
            w_t = w[gi * per:(gi + 1) * per].T
            base, dead, scale = live_gram(gram)
            rhs = np.array(fold.cross_out[gi], dtype=np.float64)
            rhs[dead] = w_t[dead]
            x = y = None
            if fold.row_q is not None and fold.row_f is not None:
                x, y = np.asarray(fold.row_q[gi], dtype=np.float64), np.asarray(fold.row_f[gi], dtype=np.float64)
            out.append(cls(base, rhs, w_t, gram, np.asarray(fold.cross_out[gi], dtype=np.float64), scale, x, y))
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
        if self.x is not None and self.y is not None:
            return self.score_outputs(self.x @ v_t)
        return float(np.einsum("ij,ij->", self.gram @ v_t, v_t)) - 2.0 * float(np.einsum("ij,ij->", v_t,
                                                                                         self.cross_out))

    def score_outputs(self, xv: NDArray[np.float64]) -> float:
        """:meth:`score` from this fold's rows' outputs ``X V^T`` ``(r, C/g)``: ``(||X V^T||^2 - 2 <X V^T, Y>) / r``."""
        assert self.y is not None
        return float(np.einsum("ij,ij->", xv, xv - 2.0 * self.y)) / xv.shape[0]


class _Direction:
    """The held-out error of fold ``fit``'s target on fold ``score`` (one group) as a function of the damp, with
    what no damp changes computed once. Where ``fit`` kept its ``r`` rows ``X`` (fewer than the inputs),
    Woodbury's identity solves in the row space: ``W*^T = W^T + X^T T / lam`` with
    ``T = Y / r - (r lam I + X X^T)^-1 (X X^T Y / r + lam X W^T)``, ``O(r^3 + r^2 C)`` per damp."""

    def __init__(self, fit: _Ready, score: _Ready) -> None:
        self.fit, self.score = fit, score
        self.low_rank = fit.x is not None and fit.y is not None and fit.x.shape[0] < fit.x.shape[1]
        if self.low_rank:
            assert fit.x is not None and fit.y is not None
            self.kernel = fit.x @ fit.x.T
            self.k_y = self.kernel @ fit.y / fit.x.shape[0]
            self.x_w = fit.x @ fit.w_t
            if score.x is not None:  # the score fold's outputs of W^T + X^T T / lam without forming it
                self.score_w = score.x @ fit.w_t
                self.score_k = score.x @ fit.x.T

    def __call__(self, damp: float) -> float:
        fit = self.fit
        lam = damp * fit.scale
        if not self.low_rank or lam <= 0:
            return self.score.score(fit.fit(damp))
        assert fit.x is not None and fit.y is not None
        r = fit.x.shape[0]
        system = self.kernel.copy()
        system[np.diag_indices_from(system)] += r * lam
        t_lam = (fit.y / r - np.linalg.solve(system, self.k_y + lam * self.x_w)) / lam
        if self.score.x is not None:
            return self.score.score_outputs(self.score_w + self.score_k @ t_lam)
        return self.score.score(fit.w_t + fit.x.T @ t_lam)


def _errors(fit: list[_Ready], score: list[_Ready], damps: Sequence[float]) -> list[float]:
    """:func:`held_out_error` of each damp, summed over the groups."""
    out = [0.0] * len(damps)
    for ft, sc in zip(fit, score, strict=True):
        direction = _Direction(ft, sc)
        for i, d in enumerate(damps):
            out[i] += direction(d)
    return out


def held_out_error(weight: NDArray[np.floating], fit: TargetFold, score: TargetFold, damp: float) -> float:
    """``E_score||W x_f - W*_fit x_q||^2 - E_score||W x_f||^2`` summed over output channels, with ``W*_fit`` the
    target of ``damp`` on fold ``fit``: ``tr(V G V^T) - 2 tr(V C_out)`` per group (``C_out = C W^T``)."""
    w = np.asarray(weight, dtype=np.float64)
    return _errors(_Ready.of(projected(fit, w), w), _Ready.of(projected(score, w), w), (damp,))[0]


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
    errors = tuple(x + y for x, y in zip(_errors(a, b, candidates), _errors(b, a, candidates), strict=True))
    if not all(np.isfinite(errors)):
        raise ValueError(f"the held-out errors of damps {candidates} are not all finite ({errors}): the folds' "
                         "statistics hold NaN/Inf")
    low = min(errors)
    first = next(i for i, e in enumerate(errors) if e <= low + TIE * max(map(abs, errors)))
    return DampChoice(candidates[first], candidates, errors)
