"""``estimate_range``: REQuant on a torch tensor, and the :class:`RangeEstimate` it returns.

This is the torch-facing adapter over :mod:`requant_plugin.core`: it validates the tensor,
lays it out as rows (one per tensor, or one per channel along ``ch_axis``), runs the NumPy
search on the CPU and hands back torch tensors on the input's device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .core import Grid, PowerTransform, check_bits, check_space, estimate_rows
from .core.grid import SymmetricConvention
from .core.objective import LOSS_SPACES, LossSpace
from .core.search import check_search

Space = Literal["uniform", "sqrt"]
Search = Literal["golden", "grid", "minmax"]


@dataclass(frozen=True)
class RangeEstimate:
    """The range REQuant chose for one tensor.

    ``y = T(w)`` (identity for ``space="uniform"``; ``sign(w) * (|w| / m) ** p`` for
    ``"sqrt"``) is quantized on the grid ``[quant_min, quant_max]`` with ``scale`` and
    ``zero_point``, ``scale = alpha * s1`` where ``s1`` is the min-max scale; the dequantized
    weight is ``T^-1(scale * (q - zero_point))``.

    Attributes:
        alpha: range factor in (0, 1] (0-d, or ``(C,)`` per channel).
        scale, zero_point: grid parameters in the transformed space (uniform: in ``w``).
        quant_min, quant_max: integer code range.
        mse: mean squared error at ``alpha`` in the loss space (0-d or ``(C,)``).
        evaluations: number of ``alpha`` candidates evaluated (per row).
        space: ``"uniform"`` or ``"sqrt"``.
        p: transform exponent (1 for uniform); m: transform normaliser per row.
        per_channel, ch_axis, symmetric: the layout and grid kind.
        clip_min, clip_max: the clipping range mapped back to ``w`` (0-d or ``(C,)``).
    """

    alpha: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    quant_min: int
    quant_max: int
    mse: torch.Tensor
    evaluations: int
    space: str
    p: float
    m: torch.Tensor
    per_channel: bool
    ch_axis: int
    symmetric: bool
    clip_min: torch.Tensor
    clip_max: torch.Tensor
    convention: str = "torch"

    def _view(self, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        t = t.to(device=w.device, dtype=torch.float64)
        if not self.per_channel or w.dim() == 0:
            return t.reshape(())
        shape = [1] * w.dim()
        shape[self.ch_axis % w.dim()] = -1
        return t.reshape(shape)

    def _work(self, w: torch.Tensor) -> torch.Tensor:
        _check_tensor(w, "w")
        return w.to(torch.float64)

    def transform(self, w: torch.Tensor) -> torch.Tensor:
        """``T(w)`` (identity for the uniform space)."""
        x = self._work(w)
        if self.p == 1.0:
            return x
        return torch.sign(x) * (x.abs() / self._view(self.m, x)) ** self.p

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        """Integer codes ``clamp(round_half_even(T(w) / scale) + zero_point)`` (int32)."""
        y = self.transform(w)
        s, z = self._view(self.scale, y), self._view(self.zero_point, y)
        return torch.clamp(torch.round(y / s) + z, self.quant_min, self.quant_max).to(torch.int32)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """``T^-1(scale * (q - zero_point))`` computed in float64."""
        s = self._view(self.scale, q)
        y = s * (q.to(s.dtype) - self._view(self.zero_point, q))
        if self.p == 1.0:
            return y
        m = self._view(self.m, y)
        return m * torch.sign(y) * y.abs() ** (1.0 / self.p)

    def fake_quantize(self, w: torch.Tensor) -> torch.Tensor:
        """``dequantize(quantize(w))`` (float64 math) with the dtype and device of ``w``."""
        return self.dequantize(self.quantize(w)).to(w.dtype)

    def levels(self) -> torch.Tensor:
        """The codebook in ``w``: ``(C, levels)`` (per channel) or ``(levels,)`` values."""
        k = torch.arange(self.quant_min, self.quant_max + 1, dtype=torch.float64)
        s = self.scale.double().reshape(-1, 1).cpu()
        y = s * (k[None, :] - self.zero_point.double().reshape(-1, 1).cpu())
        if self.p != 1.0:
            y = self.m.double().reshape(-1, 1).cpu() * torch.sign(y) * y.abs() ** (1.0 / self.p)
        return y if self.per_channel else y[0]


def _check_tensor(w: torch.Tensor, name: str) -> None:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if not (w.is_floating_point()):
        raise TypeError(
            f"{name} has dtype {w.dtype}: REQuant needs floating-point weights "
            "(float32, float16, bfloat16 or float64); cast integer tensors first"
        )


def rows_of(w: torch.Tensor, per_channel: bool, ch_axis: int) -> np.ndarray:
    """Lay ``w`` out as float32 (or float64) NumPy rows: ``(1, n)`` or ``(C, n / C)`` (``(0, 0)``
    for zero channels, so an empty tensor gives an empty per-channel estimate)."""
    x = w.detach()
    x = x.double() if x.dtype == torch.float64 else x.float()
    if per_channel and x.dim() > 0:
        c = x.shape[ch_axis]
        x = x.movedim(ch_axis, 0).reshape(c, x.numel() // c if c else 0)
    else:
        x = x.reshape(1, -1)
    return x.cpu().numpy()


def estimate_range(
    w: torch.Tensor,
    bits: int = 8,
    *,
    symmetric: bool = False,
    per_channel: bool = False,
    ch_axis: int = 0,
    space: Space = "uniform",
    search: Search = "golden",
    p: float = 0.5,
    loss_space: LossSpace = "original",
    convention: SymmetricConvention = "torch",
    quant_min: int | None = None,
    quant_max: int | None = None,
    grid_points: int = 2000,
    name: str = "tensor",
) -> RangeEstimate:
    """REQuant range estimation: ``alpha* = argmin_{alpha in (0, 1]} L(alpha)``.

    ``L(alpha) = mean((w - w_hat(alpha))**2)`` where ``w_hat`` quantizes ``T(w)`` on a uniform
    grid whose range is the min-max range scaled by ``alpha`` (``[alpha*min, alpha*max]``
    asymmetric, ``+-alpha*max|w|`` symmetric). ``space="sqrt"`` uses
    ``T(w) = sign(w) * (|w| / m) ** p`` (``p = 1/2``: REQuant's sign(w)*sqrt|w|), a grid
    that is non-uniform in ``w``. ``search="golden"`` is the fast convexity-aware search,
    ``"grid"`` the dense reference over ``grid_points`` values of alpha, ``"minmax"`` pins
    ``alpha = 1`` (plain min-max ranges).

    Args:
        w: floating-point tensor (any device; searched in float32/64 on the CPU).
        bits: 2..8 (ignored when ``quant_min``/``quant_max`` are given).
        symmetric: symmetric grid (zero point 0) instead of asymmetric.
        per_channel: one range per slice along ``ch_axis``.
        convention: symmetric scale rule: ``"torch"`` (amax/127.5 at 8 bits, torch.ao),
            ``"tensorrt"`` (amax/127, clamp [-128, 127]) or ``"narrow"`` ([-127, 127]).
        quant_min, quant_max: explicit integer range (for observers); both or neither.
        loss_space: measure the error in the ``"original"`` space or the ``"transformed"`` one.
        name: used in error messages (for example the layer name).

    Raises:
        TypeError: ``w`` is not a floating-point tensor.
        ValueError: NaN/Inf values, unknown space/search/loss space, bits outside 2..8.
    """
    _check_tensor(w, name)
    check_space(space)
    check_search(search)
    if loss_space not in LOSS_SPACES:
        raise ValueError(f"unknown loss_space {loss_space!r}: valid values are {list(LOSS_SPACES)}")
    if (quant_min is None) != (quant_max is None):
        raise ValueError("give both quant_min and quant_max, or neither")
    if quant_min is None or quant_max is None:
        grid = Grid.from_bits(check_bits(bits), symmetric=symmetric, convention=convention)
    else:
        grid = Grid(int(quant_min), int(quant_max), symmetric, convention)
    pexp = 1.0 if space == "uniform" else float(p)
    if w.dim() == 0:
        per_channel = False
    if per_channel and not -w.dim() <= ch_axis < w.dim():
        raise ValueError(f"{name}: ch_axis={ch_axis} is out of range for a {w.dim()}-D tensor")
    ch_axis = ch_axis % max(w.dim(), 1)
    rows = rows_of(w, per_channel, ch_axis)
    if rows.size and not np.isfinite(rows).all():
        bad = int((~np.isfinite(rows)).sum())
        raise ValueError(
            f"{name} has {bad} NaN/Inf values: REQuant needs finite weights; fix or skip this "
            "layer (for example overrides={name!r: {'skip': True}})"
        )
    n_rows = rows.shape[0] if rows.size else (w.shape[ch_axis] if per_channel else 1)
    if rows.size == 0:
        one = np.ones(n_rows)
        est = None
        alpha, scale, mse = one, one.copy(), np.zeros(n_rows)
        zp = np.full(n_rows, grid.symmetric_zero_point if symmetric else grid.quant_min, np.int64)
        m, evaluations = one.copy(), 0
        clip_lo, clip_hi = np.zeros(n_rows), np.zeros(n_rows)
    else:
        est = estimate_rows(rows, grid, p=pexp, loss_space=loss_space, search=search,
                            grid_points=grid_points)
        alpha, scale, zp, mse = est.alpha, est.scale, est.zero_point, est.mse
        m = est.transform.m if not est.transform.is_identity else np.ones(n_rows)
        evaluations = est.evaluations
        clip_lo, clip_hi = est.clip_range()
    dev = w.device

    def t(a: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        out = torch.as_tensor(np.asarray(a), dtype=dtype, device=dev)
        return out if per_channel else out.reshape(())

    return RangeEstimate(
        alpha=t(alpha), scale=t(scale), zero_point=t(zp, torch.int64),
        quant_min=grid.quant_min, quant_max=grid.quant_max, mse=t(mse), evaluations=evaluations,
        space=space, p=pexp, m=t(m), per_channel=per_channel, ch_axis=ch_axis,
        symmetric=symmetric, clip_min=t(clip_lo), clip_max=t(clip_hi), convention=convention,
    )


__all__ = ["RangeEstimate", "estimate_range", "rows_of", "PowerTransform"]
