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

from .target import compensated_weight

__all__ = ["TIE", "DampChoice", "TargetFold", "cross_validated_damp", "held_out_error"]

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


def held_out_error(weight: NDArray[np.floating], fit: TargetFold, score: TargetFold, damp: float) -> float:
    """``E_score||W x_f - W*_fit x_q||^2 - E_score||W x_f||^2`` summed over output channels, with ``W*_fit`` the
    target of ``damp`` on fold ``fit``: ``tr(V G V^T) - 2 tr(W^T V C)`` per group (``C W^T = C_out``)."""
    w = np.asarray(weight, dtype=np.float64)
    v_all = compensated_weight(w, fit.gram, fit.cross, damp, cross_out=fit.cross_out)
    groups = score.gram.shape[0]
    per = w.shape[0] // groups
    total = 0.0
    for gi in range(groups):
        part = slice(gi * per, (gi + 1) * per)
        v = v_all[part]
        total += float(np.einsum("ij,ij->", v @ score.gram[gi], v))
        if score.cross is not None:
            total -= 2.0 * float(np.einsum("ij,ij->", v @ score.cross[gi], w[part]))
        else:
            assert score.cross_out is not None
            total -= 2.0 * float(np.einsum("ij,ji->", v, score.cross_out[gi]))
    return total


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
    a, b = folds
    errors = tuple(held_out_error(weight, a, b, d) + held_out_error(weight, b, a, d) for d in candidates)
    if not all(np.isfinite(errors)):
        raise ValueError(f"the held-out errors of damps {candidates} are not all finite ({errors}): the folds' "
                         "statistics hold NaN/Inf")
    low = min(errors)
    first = next(i for i, e in enumerate(errors) if e <= low + TIE * max(map(abs, errors)))
    return DampChoice(candidates[first], candidates, errors)
