"""The float layer's output as the target of a layer whose inputs come from the quantized model.

With the float model's inputs ``x_f`` and the partly quantized model's inputs ``x_q`` of one layer
(on the same rows), ``E||W x_f - V x_q||^2 = E||(W* - V) x_q||^2 + const`` with
``W* = W E[x_f x_q^T] E[x_q x_q^T]^-1``: a search for ``V`` near ``W*`` under the Gram matrix of
``x_q`` matches the float layer's output, so each layer also compensates the upstream error.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["TARGET_DAMP", "compensated_weight"]

#: weight ``lambda = damp * mean(diag H)`` of the pull ``lambda ||V - W||^2`` towards the float weight
TARGET_DAMP = 0.01


def compensated_weight(
    weight: NDArray[np.floating], gram_q: NDArray[np.floating], cross: NDArray[np.floating],
    damp: float = TARGET_DAMP,
) -> NDArray[np.float64]:
    """``W* = W (C^T + lambda I) (H + lambda I)^-1`` per group: ``argmin_V E||W x_f - V x_q||^2 +
    lambda ||V - W||^2`` with ``lambda = damp * mean(diag H)`` (``damp = 0``: full compensation,
    ``damp -> inf``: ``W* -> W``).

    ``weight``: ``(C, n)``, output channels in ``g`` contiguous groups; ``gram_q``: ``(g, n, n)``
    ``H = E[x_q x_q^T]``; ``cross``: ``(g, n, n)`` ``C = E[x_q x_f^T]``. An input that is always
    zero in ``x_q`` keeps its float weight (nothing is known about it).
    """
    w = np.asarray(weight, dtype=np.float64)
    h_all = np.asarray(gram_q, dtype=np.float64)
    c_all = np.asarray(cross, dtype=np.float64)
    if h_all.ndim != 3 or h_all.shape != c_all.shape or h_all.shape[1] != h_all.shape[2]:
        raise ValueError(f"gram_q and cross must both be (groups, n, n), got {h_all.shape} and {c_all.shape}")
    g, n = h_all.shape[0], h_all.shape[1]
    if w.ndim != 2 or w.shape[1] != n or w.shape[0] % g:
        raise ValueError(f"weight must be (C, {n}) with C a multiple of {g} groups, got {w.shape}")
    if damp < 0 or not np.isfinite(damp):
        raise ValueError(f"damp must be finite and >= 0, got {damp}")
    out = np.empty_like(w)
    per = w.shape[0] // g
    for gi in range(g):
        h, c = h_all[gi].copy(), c_all[gi].copy()
        dead = np.diag(h) <= 0
        h[dead, :], h[:, dead] = 0.0, 0.0
        h[dead, dead] = 1.0
        c[dead, :] = 0.0
        c[dead, dead] = 1.0  # (W C^T)[:, j] = W[:, j] and H e_j = e_j: W*[:, j] = W[:, j]
        live = ~dead
        mean_diag = float(np.mean(np.diag(h)[live])) if live.any() else 1.0
        lam = damp * mean_diag
        idx = np.flatnonzero(live)
        h[idx, idx] += lam
        c[idx, idx] += lam
        wg = w[gi * per:(gi + 1) * per]
        out[gi * per:(gi + 1) * per] = np.linalg.solve(h, c @ wg.T).T  # H symmetric: W* = (H^-1 C W^T)^T
    return out
