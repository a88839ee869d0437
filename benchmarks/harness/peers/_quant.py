"""Reference fake quantization from a clipping range (torch.ao observer formulas).

Shared by the peer adapters that only *choose a range* (min-max, percentile, ACIQ, the
ModelOpt-style grid): they differ in the range, never in how it is applied.

* asymmetric: ``[l, u] = [min(lo, 0), max(hi, 0)]``, ``s = (u - l) / (2**b - 1)``,
  ``z = clamp(-round(l / s), 0, 2**b - 1)``, codes ``[0, 2**b - 1]`` (torch.ao ``per_tensor_affine``);
* symmetric: ``s = amax / d`` with ``d = (2**b - 1) / 2`` (``"torch"``, torch.ao
  ``per_tensor_symmetric``) or ``d = 2**(b-1) - 1`` (``"tensorrt"``, ``amax / 127`` at 8 bits),
  codes ``[-2**(b-1), 2**(b-1) - 1]``, zero point 0.

``w_hat = s * (clamp(round_half_even(w / s) + z) - z)`` computed in float64.
"""

from __future__ import annotations

import torch

EPS = float(torch.finfo(torch.float32).eps)


def rows(w: torch.Tensor, per_channel: bool, ch_axis: int = 0) -> torch.Tensor:
    """``w`` as float64 rows: ``(1, n)`` per tensor or ``(C, n / C)`` per channel."""
    x = w.detach().double()
    if per_channel and x.dim() > 1:
        return x.movedim(ch_axis, 0).reshape(x.shape[ch_axis], -1)
    return x.reshape(1, -1)


def unrows(r: torch.Tensor, like: torch.Tensor, per_channel: bool, ch_axis: int = 0) -> torch.Tensor:
    """Inverse of :func:`rows`, cast to ``like``'s dtype."""
    if per_channel and like.dim() > 1:
        moved = list(like.movedim(ch_axis, 0).shape)
        return r.reshape(moved).movedim(0, ch_axis).to(like.dtype)
    return r.reshape(like.shape).to(like.dtype)


def qparams(
    lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool, convention: str = "torch"
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """``(scale, zero_point, qmin, qmax)`` for per-row ranges ``lo``/``hi`` (shape ``(R,)``)."""
    lo = torch.minimum(lo.double(), torch.zeros_like(lo, dtype=torch.float64))
    hi = torch.maximum(hi.double(), torch.zeros_like(hi, dtype=torch.float64))
    if symmetric:
        qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        d = (qmax - qmin) / 2.0 if convention == "torch" else float(qmax)
        scale = torch.clamp(torch.maximum(-lo, hi) / d, min=EPS)
        return scale, torch.zeros_like(scale), qmin, qmax
    qmin, qmax = 0, 2**bits - 1
    scale = torch.clamp((hi - lo) / (qmax - qmin), min=EPS)
    zp = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    return scale, zp, qmin, qmax


def fake_quant_rows(
    r: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """Fake-quantize rows ``(R, n)`` with per-row ``scale``/``zp`` (float64)."""
    s, z = scale.reshape(-1, 1), zp.reshape(-1, 1)
    return s * (torch.clamp(torch.round(r / s) + z, qmin, qmax) - z)


def fake_quant_range(
    w: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    bits: int,
    *,
    symmetric: bool,
    per_channel: bool,
    ch_axis: int = 0,
    convention: str = "torch",
) -> torch.Tensor:
    """Fake-quantize ``w`` with the clipping range ``[lo, hi]`` (per row of :func:`rows`)."""
    r = rows(w, per_channel, ch_axis)
    scale, zp, qmin, qmax = qparams(lo, hi, bits, symmetric, convention)
    return unrows(fake_quant_rows(r, scale, zp, qmin, qmax), w, per_channel, ch_axis)
