"""Uniform integer grids and their quantization parameters (pure NumPy).

A grid is the integer range ``[quant_min, quant_max]`` plus the rule that turns a clipping
range into ``(scale, zero_point)``. For a clipping range scaled by ``alpha`` in (0, 1]:

* **asymmetric**: ``[l, u] = [alpha * min(lo, 0), alpha * max(hi, 0)]``,
  ``s = (u - l) / (quant_max - quant_min)`` and ``z = quant_min - round(l / s)``. Because both
  ends scale around zero, ``s(alpha) = alpha * s1`` and ``z`` does not depend on ``alpha``.
* **symmetric**: ``c = alpha * max(|lo|, |hi|)``, ``s = c / d`` with ``d`` set by the
  convention: ``"torch"`` (``d = (quant_max - quant_min) / 2``, torch.ao's MinMaxObserver),
  ``"tensorrt"`` (``d = 2**(b-1) - 1`` with the full clamp ``[-2**(b-1), 2**(b-1) - 1]``,
  TensorRT's ``amax / 127``) or ``"narrow"`` (``d = 2**(b-1) - 1`` and the clamp
  ``[-(2**(b-1) - 1), 2**(b-1) - 1]``).

Quantization is ``q = clamp(round_half_even(x / s) + z, quant_min, quant_max)`` and
dequantization ``x_hat = s * (q - z)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..options import Convention, check_bits

#: The convention names as a typing alias (validation: :class:`~requant_plugin.options.Convention`).
SymmetricConvention = Literal["torch", "tensorrt", "narrow"]
#: Smallest scale handed out, as torch.ao's observers do (float32 machine epsilon).
EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Grid:
    """An integer grid ``[quant_min, quant_max]`` and its range-to-qparams rule.

    Attributes:
        quant_min: smallest integer code.
        quant_max: largest integer code.
        symmetric: symmetric (zero point fixed) or asymmetric (affine) ranges.
        convention: how a symmetric clipping value becomes a scale (see module docstring).
    """

    quant_min: int
    quant_max: int
    symmetric: bool = False
    convention: str = "torch"

    def __post_init__(self) -> None:
        if self.quant_max <= self.quant_min:
            raise ValueError(
                f"quant_max ({self.quant_max}) must be greater than quant_min ({self.quant_min})"
            )
        if self.quant_min > 0 or self.quant_max < 0:
            raise ValueError(
                f"the grid [{self.quant_min}, {self.quant_max}] must contain 0 "
                "(signed codes like [-8, 7] or unsigned ones like [0, 15])"
            )
        if self.quant_max - self.quant_min > 255:
            raise ValueError(
                f"the grid [{self.quant_min}, {self.quant_max}] has more than 256 levels "
                "(at most 8 bits are supported)"
            )
        # a member or its spelling; stored as the plain spelling
        object.__setattr__(self, "convention", Convention.parse(self.convention, "symmetric convention").value)

    @classmethod
    def from_bits(
        cls, bits: int, *, symmetric: bool = False, convention: str = "torch"
    ) -> Grid:
        """The standard b-bit grid: ``[0, 2**b - 1]`` asymmetric, ``[-2**(b-1), 2**(b-1) - 1]``
        symmetric (``[-(2**(b-1) - 1), 2**(b-1) - 1]`` for the narrow convention)."""
        b = check_bits(bits)
        if not symmetric:
            return cls(0, 2**b - 1, False, convention)
        half = 2 ** (b - 1)
        lo = -(half - 1) if convention == "narrow" else -half
        return cls(lo, half - 1, True, convention)

    @property
    def levels(self) -> int:
        """Number of integer codes."""
        return self.quant_max - self.quant_min + 1

    @property
    def bits(self) -> int:
        """Bits needed to hold the codes."""
        return int(np.ceil(np.log2(self.levels)))

    @property
    def symmetric_zero_point(self) -> int:
        """Zero point of a symmetric grid: 0 for signed codes, the midpoint for unsigned ones."""
        return 0 if self.quant_min < 0 else (self.quant_min + self.quant_max + 1) // 2

    @property
    def symmetric_divisor(self) -> float:
        """``d`` in ``scale = c / d`` for symmetric grids."""
        if self.convention == "torch":
            return (self.quant_max - self.quant_min) / 2.0
        return float(min(self.quant_max - self.symmetric_zero_point,
                         self.symmetric_zero_point - self.quant_min))

    def base_qparams(
        self, lo: NDArray[np.float64], hi: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Scale ``s1`` and zero point at ``alpha = 1`` for the data range ``[lo, hi]``.

        The scale of any ``alpha`` is then ``alpha * s1`` with the same zero point. A zero
        range (all-zero data) gets scale 1, which represents it exactly.
        """
        lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
        hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
        if self.symmetric:
            amax = np.maximum(-lo, hi)
            s1 = amax / self.symmetric_divisor
            z = np.full(s1.shape, self.symmetric_zero_point, dtype=np.int64)
        else:
            s1 = (hi - lo) / float(self.quant_max - self.quant_min)
            safe = np.where(s1 > 0, s1, 1.0)
            z = np.clip(self.quant_min - np.round(lo / safe), self.quant_min,
                        self.quant_max).astype(np.int64)
        s1 = np.where(s1 > 0, s1, 1.0)
        return s1, z

    def clip_range(
        self, scale: NDArray[np.float64], zero_point: NDArray[np.int64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The representable range ``[s * (quant_min - z), s * (quant_max - z)]``."""
        return scale * (self.quant_min - zero_point), scale * (self.quant_max - zero_point)


def fake_quantize_np(
    x: NDArray[np.floating], scale: NDArray[np.float64], zero_point: NDArray[np.int64],
    quant_min: int, quant_max: int,
) -> NDArray[np.float64]:
    """Reference fake quantization ``s * (clamp(round_half_even(x / s) + z) - z)`` in float64.

    ``scale``/``zero_point`` broadcast against ``x`` (shape them ``(C, 1)`` for rows).
    """
    q = np.clip(np.rint(np.asarray(x, dtype=np.float64) / scale) + zero_point, quant_min, quant_max)
    return scale * (q - zero_point)
