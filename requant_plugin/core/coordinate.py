"""Cyclic coordinate descent on the rounding of a weight already on its grid.

With ``e_c = w_c - w_hat_c`` and ``G`` positive semi-definite, the output error
``e_c^T G e_c`` as a function of one weight ``w_hat_cj`` alone is a parabola with its minimum at
``w_hat_cj + (G e_c)_j / G_jj``; the grid level nearest that point (in value space) is the best
level for that weight given all the others. Visiting the weights column by column and moving each
to that level never raises the error (the current level is a candidate), so a few sweeps refine a
rounding such as :func:`~.output_objective.error_feedback_round` toward a local minimum over the
grid (QuantEase, Behdin et al. 2023, uses the same update for language models).

Columns are visited in blocks: inside a block only the block's columns of ``R = E G`` are updated
after each move, the rest once per block by one matrix product (as the feedback rounding does).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from .transform import PowerTransform

__all__ = ["coordinate_descent_round", "nearest_level"]


def coordinate_descent_round(
    target: NDArray[np.floating], w_hat: NDArray[np.floating], gram: NDArray[np.floating],
    nearest: Callable[[NDArray[np.float64]], NDArray[np.float64]], *, sweeps: int = 2, block: int = 128,
) -> NDArray[np.float64]:
    """Lower every row's ``e_c^T G e_c`` (``e = target - w_hat``, both ``(C, n)``, ``G`` ``(n, n)``, or
    ``(C, n, n)``: one per channel, e.g. a depthwise convolution) by at most ``sweeps`` cyclic
    coordinate-descent sweeps; ``nearest(v)`` maps an ``(C,)`` column of values to each channel's nearest
    grid level. Returns the new ``w_hat`` (on the grid); stops early once a sweep moves nothing. Columns
    with ``G_jj = 0`` do not affect the error and keep their levels."""
    w = np.asarray(target, dtype=np.float64)
    q = np.asarray(w_hat, dtype=np.float64)
    g = np.asarray(gram, dtype=np.float64)
    c, n = w.shape
    if q.shape != (c, n) or g.shape not in ((n, n), (c, n, n)):
        raise ValueError(f"target and w_hat must be (C, n) and gram (n, n) or (C, n, n); got {w.shape}, {q.shape}, "
                         f"{g.shape}")
    if sweeps < 0 or block < 1:
        raise ValueError(f"sweeps must be >= 0 and block >= 1, got {sweeps} and {block}")
    if g.ndim == 3:
        return _per_channel(w, q.copy(), g, nearest, sweeps)
    diag = np.diag(g)
    qt = np.ascontiguousarray(q.T)  # (n, C): column j of w_hat is the contiguous row j
    for _ in range(sweeps):
        rt = g @ (w - qt.T).T  # (n, C): R^T = G E^T, recomputed each sweep (no drift)
        moved = False
        for b0 in range(0, n, block):
            b1 = min(n, b0 + block)
            dt = np.zeros((b1 - b0, c))
            for j in range(b0, b1):
                if diag[j] <= 0:
                    continue
                new = nearest(qt[j] + rt[j] / diag[j])
                delta = new - qt[j]
                if not delta.any():
                    continue
                moved = True
                qt[j] = new
                dt[j - b0] = delta
                rt[b0:b1] -= np.outer(g[b0:b1, j], delta)  # e_c loses delta_c at j: R loses delta G[j, :]
            if dt.any():
                rt[:b0] -= g[:b0, b0:b1] @ dt
                rt[b1:] -= g[b1:, b0:b1] @ dt
        if not moved:
            break
    return np.ascontiguousarray(qt.T)


def _per_channel(
    w: NDArray[np.float64], q: NDArray[np.float64], g: NDArray[np.float64],
    nearest: Callable[[NDArray[np.float64]], NDArray[np.float64]], sweeps: int,
) -> NDArray[np.float64]:
    """The sweeps with one Gram matrix per channel (``g`` ``(C, n, n)``), all channels at once."""
    diag = np.diagonal(g, axis1=1, axis2=2)  # (C, n)
    live = diag > 0
    safe = np.where(live, diag, 1.0)
    for _ in range(sweeps):
        r = np.einsum("cjk,ck->cj", g, w - q)  # R[c] = G_c e_c
        moved = False
        for j in range(w.shape[1]):
            new = np.where(live[:, j], nearest(q[:, j] + r[:, j] / safe[:, j]), q[:, j])
            delta = new - q[:, j]
            if not delta.any():
                continue
            moved = True
            q[:, j] = new
            r -= g[:, :, j] * delta[:, None]
        if not moved:
            break
    return q


def nearest_level(
    scale: NDArray[np.floating], zero_point: NDArray[np.floating], transform: PowerTransform,
    quant_min: int, quant_max: int,
) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """``v -> `` the level ``T^-1(s_c (q - z_c))`` nearest ``v_c`` in value space, per channel (``T`` monotone,
    so it is one of the two levels whose codes bracket ``T(v_c) / s_c + z_c``)."""
    s = np.asarray(scale, dtype=np.float64)
    z = np.asarray(zero_point, dtype=np.float64)

    def nearest(v: NDArray[np.float64]) -> NDArray[np.float64]:
        low = np.clip(np.floor(transform.forward(v) / s + z), quant_min, quant_max)
        a = transform.inverse(s * (low - z))
        b = transform.inverse(s * (np.minimum(low + 1, quant_max) - z))
        return np.where(np.abs(v - a) <= np.abs(v - b), a, b)

    return nearest
