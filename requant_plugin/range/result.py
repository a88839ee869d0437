""":class:`RangeEstimate`: the range REQuant chose for one tensor, and how to apply it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
        """``dequantize(quantize(w))`` (float64 math) with the dtype and device of ``w``.

        For ``p`` in ``{1, 1/2}`` the codes are computed in place on one float64 copy and mapped to
        their values through the per-row codebook (:meth:`_codebook`: the same float64 operations
        as :meth:`dequantize`, on ``levels`` values per row), which gives the same bits with a few
        passes over the tensor instead of a dozen temporaries.
        """
        if self.p not in (1.0, 0.5) or (w.requires_grad and torch.is_grad_enabled()):
            return self.dequantize(self.quantize(w)).to(w.dtype)
        check_tensor(w, "w")
        if w.device.type == "cpu":
            return self._fake_quantize_np(w)
        x = w.detach().to(torch.float64)
        x = x.clone() if x is w else x  # the float64 working copy (never ``w`` itself)
        if self.p != 1.0:  # T(x) = sign(x) * (|x| / m) ** p, as in :meth:`transform`
            sign = torch.sign(x)
            x.abs_().div_(self._view(self.m, x)).pow_(self.p).mul_(sign)
            del sign
        # codes as in :meth:`quantize` (float64 integers), then shifted to rows of the codebook
        x.div_(self._view(self.scale, x)).round_().add_(self._view(self.zero_point, x))
        x.clamp_(self.quant_min, self.quant_max).sub_(self.quant_min)
        book = self._codebook()
        if self.per_channel and x.dim() > 0:
            rows = torch.arange(book.shape[0], dtype=torch.float64, device=x.device) * book.shape[1]
            x.add_(self._view(rows, x))
        return torch.take(book.to(device=x.device, dtype=w.dtype).reshape(-1), x.long())

    def _fake_quantize_np(self, w: torch.Tensor) -> torch.Tensor:
        """:meth:`fake_quantize` of a CPU tensor in NumPy, in place on one float64 copy (the same
        IEEE operations: division, sqrt, round half to even, clamp; single-threaded, so no torch
        thread pool to wait for on a busy machine)."""
        x = np.array(w.detach().to(torch.float64).numpy(), dtype=np.float64, copy=True)

        def view(t: torch.Tensor) -> np.ndarray:
            return self._view(t, w).cpu().numpy()

        if self.p != 1.0:  # T(x) = sign(x) * (|x| / m) ** (1/2)
            sign = np.sign(x)
            np.abs(x, out=x)
            np.divide(x, view(self.m), out=x)
            np.sqrt(x, out=x)
            np.multiply(x, sign, out=x)
            del sign
        np.divide(x, view(self.scale), out=x)
        np.rint(x, out=x)
        np.add(x, view(self.zero_point), out=x)
        np.clip(x, self.quant_min, self.quant_max, out=x)
        np.subtract(x, self.quant_min, out=x)
        book = self._codebook().cpu().numpy()
        if self.per_channel and x.ndim > 0:
            rows = torch.arange(book.shape[0], dtype=torch.float64) * book.shape[1]
            np.add(x, view(rows), out=x)
        out = np.take(book.reshape(-1), x.astype(np.intp))
        return torch.from_numpy(out).to(w.dtype)

    def _codebook(self) -> torch.Tensor:
        """``(rows, levels)`` float64: :meth:`dequantize` of every code of every row (same operations)."""
        k = torch.arange(self.quant_min, self.quant_max + 1, dtype=torch.float64, device=self.scale.device)
        s = self.scale.to(torch.float64).reshape(-1, 1)
        y = s * (k[None, :] - self.zero_point.to(torch.float64).reshape(-1, 1))
        if self.p == 1.0:
            return y
        m = self.m.to(device=y.device, dtype=torch.float64).reshape(-1, 1)
        return m * torch.sign(y) * y.abs() ** (1.0 / self.p)

    def levels(self) -> torch.Tensor:
        """The codebook in ``w``: ``(C, levels)`` (per channel) or ``(levels,)`` values."""
        k = torch.arange(self.quant_min, self.quant_max + 1, dtype=torch.float64)
        s = self.scale.double().reshape(-1, 1).cpu()
        y = s * (k[None, :] - self.zero_point.double().reshape(-1, 1).cpu())
        if self.p != 1.0:
            y = self.m.double().reshape(-1, 1).cpu() * torch.sign(y) * y.abs() ** (1.0 / self.p)
        return y if self.per_channel else y[0]
