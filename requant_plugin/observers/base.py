"""What every REQuant observer shares: torch's qparams rules around a calibrator.

torch.ao and torchao ship two *distinct* copies of ``UniformQuantizationObserverBase`` and each
flow only recognises observers derived from its own copy, so the observers are mixins (this
module, :mod:`.weight`, :mod:`.activation`, :mod:`.pinned`) combined with the right base in
two-line classes (:mod:`.ao` for FX, :mod:`.pt2e` for torchao). A mixin is a thin adapter: the
statistics live in a :mod:`requant_plugin.calib` calibrator that keeps them in the module's own
buffers, and the mixin only uses what both bases provide: ``dtype``, ``qscheme``,
``quant_min``, ``quant_max``, ``has_customized_qrange``, the ``eps`` buffer and
``_calculate_qparams(min_val, max_val)``.

REQuant only chooses the clipping range. For a data range ``[lo, hi]`` and range factor
``alpha`` in (0, 1] the observer hands ``_calculate_qparams(alpha * lo, alpha * hi)`` to the
base class, so torch's conventions (``eps``, zero-point rounding and clamping, the symmetric
zero point of unsigned dtypes, 1-element tensors per tensor) apply unchanged; ``alpha = 1``
(``search="minmax"``) therefore reproduces ``MinMaxObserver`` / ``PerChannelMinMaxObserver``
exactly.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..calib.base import Calibrator, check_float, tensor_key
from ..core import Grid
from ..options import Search

__all__ = [
    "PER_CHANNEL", "PER_TENSOR", "RELU_MEAN_RATIO", "SEARCH_CHOICES", "SYMMETRIC", "ObserverMixinBase", "qscheme_for",
    "check_float", "check_search", "observer_grid", "symmetric_zero_point", "tensor_key",
]

#: the qschemes, declared once for every observer and factory
SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)
PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric)
_UNSIGNED = (torch.quint8, torch.uint8)
SEARCH_CHOICES: tuple[str, ...] = tuple(Search.values())
#: ``E[x]**2 / Var[x]`` of a ReLU of a standard normal: ``(1 / 2pi) / (1/2 - 1/2pi)``.
RELU_MEAN_RATIO = (1.0 / (2.0 * math.pi)) / (0.5 - 1.0 / (2.0 * math.pi))
_NO_DATA = (
    "must run observer before calling calculate_qparams: returning the default scale 1.0 and "
    "zero point 0"
)


def qscheme_for(per_channel: bool, symmetric: bool) -> torch.qscheme:
    """The torch qscheme for a granularity and symmetry."""
    if per_channel:
        return torch.per_channel_symmetric if symmetric else torch.per_channel_affine
    return torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine


def symmetric_zero_point(dtype: torch.dtype, quant_min: int, quant_max: int, customized: bool) -> int:
    """The zero point torch's ``_calculate_qparams`` uses for a symmetric qscheme.

    0 for signed dtypes; for ``quint8``/``uint8`` the rounded-down midpoint
    ``(quant_min + quant_max) // 2`` of a customised range, else 128.
    """
    if dtype in _UNSIGNED:
        return (quant_min + quant_max) // 2 if customized else 128
    if dtype == torch.uint16:
        return 2**15
    return 0


def observer_grid(
    dtype: torch.dtype, qscheme: torch.qscheme, quant_min: int, quant_max: int, customized: bool
) -> Grid:
    """The core :class:`~requant_plugin.core.Grid` equal to torch's quantizer for these settings.

    Affine: ``Grid(quant_min, quant_max)``, whose data-dependent zero point follows torch's
    ``quant_min - round(lo / scale)``. Symmetric: the codes shifted by torch's fixed zero point
    ``z0`` (``Grid(quant_min - z0, quant_max - z0, symmetric=True)``) with the scale
    ``max|x| / ((quant_max - quant_min) / 2)`` of torch's ``MinMaxObserver``.
    """
    levels = quant_max - quant_min + 1
    if levels > 256:
        raise ValueError(
            f"REQuant observers support at most 256 levels (8 bits); [{quant_min}, {quant_max}] has "
            f"{levels}: pass quant_min/quant_max of an 8-bit or smaller range"
        )
    if qscheme in SYMMETRIC:
        z0 = symmetric_zero_point(dtype, quant_min, quant_max, customized)
        if not quant_min <= z0 <= quant_max:
            raise ValueError(
                f"symmetric range [{quant_min}, {quant_max}] does not contain torch's zero point {z0} "
                f"for {dtype}"
            )
        return Grid(quant_min - z0, quant_max - z0, True, "torch")
    return Grid(quant_min, quant_max, False, "torch")


def check_search(search: Any, alpha: float | None) -> float | None:
    """Validate ``search``/``alpha``; returns the pinned alpha (``None`` when searching)."""
    search = Search.parse(search)
    if alpha is not None:
        alpha = float(alpha)
        if not 0.0 < alpha <= 1.0 or not math.isfinite(alpha):
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if search == Search.MINMAX and alpha != 1.0:
            raise ValueError("search='minmax' pins alpha to 1; do not also pass alpha")
        return alpha
    return 1.0 if search == Search.MINMAX else None


class ObserverMixinBase(torch.nn.Module):
    """State handling shared by every REQuant observer (mixed into torch's observer bases)."""

    if TYPE_CHECKING:  # provided by (torch.ao | torchao).UniformQuantizationObserverBase
        dtype: torch.dtype
        qscheme: torch.qscheme
        quant_min: int
        quant_max: int
        has_customized_qrange: bool
        eps: Tensor
        is_dynamic: bool

        def _calculate_qparams(self, min_val: Tensor, max_val: Tensor) -> tuple[Tensor, Tensor]: ...

    calibrator: Calibrator[Any]

    def _setup_requant(self, search: Any, alpha: float | None, grid_points: int) -> None:
        if self.is_dynamic:
            raise ValueError(f"{type(self).__name__} is a static (calibration) observer: is_dynamic=True "
                             "is not supported")
        if self.qscheme == torch.per_channel_affine_float_qparams:
            raise ValueError(f"{type(self).__name__} does not support per_channel_affine_float_qparams")
        self.fixed_alpha = check_search(search, alpha)
        self.search = str(Search.parse(search))
        if int(grid_points) < 2:
            raise ValueError(f"grid_points must be at least 2, got {grid_points}")
        self.grid_points = int(grid_points)
        self.grid = observer_grid(self.dtype, self.qscheme, int(self.quant_min), int(self.quant_max),
                                  bool(self.has_customized_qrange))

    @property
    def symmetric(self) -> bool:
        """True for the symmetric qschemes."""
        return self.qscheme in SYMMETRIC

    def _core_search(self) -> str:
        return "grid" if self.search == "grid" else "golden"

    def _default_qparams(self) -> tuple[Tensor, Tensor]:
        warnings.warn(f"{type(self).__name__}: {_NO_DATA}", UserWarning, stacklevel=3)
        dev = self.eps.device
        return torch.tensor([1.0], device=dev), torch.tensor([0], device=dev)

    def _qparams_for_range(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """``(scale, zero_point)`` by the base class's rules for the clipping range ``[lo, hi]``."""
        return self._calculate_qparams(lo.to(torch.float32), hi.to(torch.float32))

    def _factory_kwargs(self) -> dict[str, Any]:
        """Device and dtype of torch's ``factory_kwargs``, read back from the ``eps`` buffer the base
        class created with them (the mixins pass torch's arguments through untouched)."""
        return {"device": self.eps.device, "dtype": self.eps.dtype}

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any], strict: bool,
        missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str],
    ) -> None:
        """Resize data-sized buffers to the saved shapes before the regular load copies them."""
        for name in self.calibrator.resizable:
            key = prefix + name
            if key in state_dict and isinstance(state_dict[key], Tensor):
                getattr(self, name).resize_(state_dict[key].shape)
        self.calibrator.invalidate()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _check_input(self, x: Tensor) -> bool:
        """False for an empty tensor (nothing to observe); TypeError for a non-float one."""
        if x.numel() == 0:
            return False
        check_float(x, type(self).__name__)
        return True


#: the name this base had before the observers became a package
_REQuantMixinBase = ObserverMixinBase
