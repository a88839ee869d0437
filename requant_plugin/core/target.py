"""The float layer's output as the target of a layer whose inputs come from the quantized model.

With the float model's inputs ``x_f`` and the partly quantized model's inputs ``x_q`` of one layer
(on the same rows), ``E||W x_f - V x_q||^2 = E||(W* - V) x_q||^2 + const`` with
``W* = W E[x_f x_q^T] E[x_q x_q^T]^-1``: a search for ``V`` near ``W*`` under the Gram matrix of
``x_q`` matches the float layer's output, so each layer also compensates the upstream error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from .damped import DampedFactor

__all__ = ["TARGET_DAMP", "compensated_weight"]

#: weight ``lambda = damp * mean(diag H)`` of the pull ``lambda ||V - W||^2`` towards the float weight
TARGET_DAMP = 0.01


def compensated_weight(
    weight: NDArray[np.floating], gram_q: NDArray[np.floating], cross: NDArray[np.floating] | None = None,
    damp: float = TARGET_DAMP, *, cross_out: NDArray[np.floating] | None = None,
    factors: Sequence[DampedFactor] | None = None,
) -> NDArray[np.float64]:
    """``W* = W (C^T + lambda I) (H + lambda I)^-1`` per group: ``argmin_V E||W x_f - V x_q||^2 +
    lambda ||V - W||^2`` with ``lambda = damp * mean(diag H)`` (``damp = 0``: full compensation,
    ``damp -> inf``: ``W* -> W``).

    ``weight``: ``(C, n)``, output channels in ``g`` contiguous groups; ``gram_q``: ``(g, n, n)``
    ``H = E[x_q x_q^T]``; exactly one of ``cross``: ``(g, n, n)`` ``C = E[x_q x_f^T]``, or
    ``cross_out``: ``(g, n, C/g)`` ``C W_g^T = E[x_q y_f^T]`` with the group's float outputs
    ``y_f = W_g x_f`` (cheaper to accumulate where ``C/g < n``). An input that is always zero in
    ``x_q`` keeps its float weight (nothing is known about it). ``factors``: the groups'
    :class:`~.damped.DampedFactor` of ``gram_q`` made with ``damp`` (any order; e.g. the feedback
    rounding's, reused), else they are made here.
    """
    w = np.asarray(weight, dtype=np.float64)
    h_all = np.asarray(gram_q)
    if (cross is None) == (cross_out is None):
        raise ValueError("give exactly one of cross (g, n, n) and cross_out (g, n, C/g)")
    if h_all.ndim != 3 or h_all.shape[1] != h_all.shape[2]:
        raise ValueError(f"gram_q must be (groups, n, n), got {h_all.shape}")
    g, n = h_all.shape[0], h_all.shape[1]
    if w.ndim != 2 or w.shape[1] != n or w.shape[0] % g:
        raise ValueError(f"weight must be (C, {n}) with C a multiple of {g} groups, got {w.shape}")
    per = w.shape[0] // g
    if cross is not None:
        c_all = np.asarray(cross, dtype=np.float64)
        if c_all.shape != h_all.shape:
            raise ValueError(f"gram_q and cross must both be (groups, n, n), got {h_all.shape} and {c_all.shape}")
        co_all = np.stack([c_all[gi] @ w[gi * per:(gi + 1) * per].T for gi in range(g)])
    else:
        co_all = np.asarray(cross_out, dtype=np.float64)
        if co_all.shape != (g, n, per):
            raise ValueError(f"cross_out must be ({g}, {n}, {per}) for this weight and gram_q, got {co_all.shape}")
    if factors is not None and len(factors) != g:
        raise ValueError(f"factors must hold one DampedFactor per group ({g}), got {len(factors)}")
    out = np.empty_like(w)
    for gi in range(g):
        wg = w[gi * per:(gi + 1) * per]
        fac = DampedFactor.of(h_all[gi], damp, "input") if factors is None else factors[gi]
        fac.check(n, damp, fac.order)
        co = co_all[gi].copy()
        co[fac.dead] = wg.T[fac.dead]  # a dead input: H e_j = (1 + lam) e_j and this row becomes (1 + lam) W[:, j]
        co += fac.lam * wg.T
        out[gi * per:(gi + 1) * per] = fac.solve(co).T  # H symmetric: W* = (H^-1 (C + lam I) W^T)^T
    return out
