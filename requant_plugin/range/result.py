""":class:`RangeEstimate`: the range REQuant chose for one tensor, and how to apply it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..options import Granularity, PerChannel, PerTensor
from .rows import check_tensor

__all__ = ["RangeEstimate"]


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
        per_channel, ch_axis, symmetric: the layout and grid kind (see also :attr:`granularity`).
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

    @property
    def granularity(self) -> Granularity:
        """``PerChannel(ch_axis)`` or ``PerTensor()``: the layout as a type."""
        return PerChannel(self.ch_axis) if self.per_channel else PerTensor()

    def _view(self, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        t = t.to(device=w.device, dtype=torch.float64)
        if not self.per_channel or w.dim() == 0:
            return t.reshape(())
        shape = [1] * w.dim()
        shape[self.ch_axis % w.dim()] = -1
        return t.reshape(shape)

    def _work(self, w: torch.Tensor) -> torch.Tensor:
        check_tensor(w, "w")
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
