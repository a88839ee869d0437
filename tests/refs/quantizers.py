"""Independent closed-form quantizers used as test references (paper.md §4 and §7)."""

from __future__ import annotations

import numpy as np


def ref_fake_quant(w: np.ndarray, alpha: float, bits: int, symmetric: bool, space: str) -> np.ndarray:
    """Quantize a 1-D array with range factor alpha, written from the formulas directly.

    uniform: asymmetric [alpha*min(w,0), alpha*max(w,0)] on 0..2^b-1, or symmetric
    +-alpha*max|w| on -2^(b-1)..2^(b-1)-1 with torch's scale c / ((qmax - qmin) / 2).
    sqrt: the same on y = sign(w) * sqrt(|w|), mapped back with sign(y) * y^2 (no normaliser).
    """
    w = np.asarray(w, dtype=np.float64)
    y = np.sign(w) * np.sqrt(np.abs(w)) if space == "sqrt" else w
    if symmetric:
        qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        c = alpha * np.max(np.abs(y))
        s = c / ((qmax - qmin) / 2) if c > 0 else 1.0
        z = 0.0
    else:
        qmin, qmax = 0, 2**bits - 1
        lo, hi = alpha * min(y.min(), 0.0), alpha * max(y.max(), 0.0)
        s = (hi - lo) / (qmax - qmin) if hi > lo else 1.0
        z = np.clip(qmin - np.round(lo / s), qmin, qmax)
    # y / s within float round-off of a midpoint is an exact tie in exact arithmetic (e.g. the
    # extreme value at alpha = 1, with the symmetric scale c / 127.5): round it half to even,
    # as the exact arithmetic (and the core objective) does, not by the division's last ulp
    r = y / s
    half = np.round(2.0 * r) / 2.0
    r = np.where((half % 1.0 == 0.5) & (np.abs(r - half) <= 1e-12 * np.maximum(1.0, np.abs(r))), half, r)
    q = np.clip(np.round(r) + z, qmin, qmax)
    yq = s * (q - z)
    return np.sign(yq) * yq * yq if space == "sqrt" else yq


def ref_mse(w: np.ndarray, alpha: float, bits: int, symmetric: bool, space: str) -> float:
    """Mean squared error of :func:`ref_fake_quant` in the original space."""
    return float(np.mean((ref_fake_quant(w, alpha, bits, symmetric, space) - np.asarray(w, np.float64)) ** 2))


def ref_dense_grid(w: np.ndarray, bits: int, symmetric: bool, space: str, points: int = 2000) -> float:
    """Best MSE over alpha = k / points, k = 1..points (brute force, direct fake-quant)."""
    return min(ref_mse(w, k / points, bits, symmetric, space) for k in range(1, points + 1))


def sample(dist: str, n: int, seed: int, scale: float = 1.0) -> np.ndarray:
    """Gaussian, Laplace or Student-t(3) samples."""
    rng = np.random.default_rng(seed)
    if dist == "gaussian":
        x = rng.normal(size=n)
    elif dist == "laplace":
        x = rng.laplace(size=n)
    else:
        x = rng.standard_t(3, size=n)
    return (x * scale).astype(np.float32)
