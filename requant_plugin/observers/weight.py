"""REQuant weight observers (per tensor, per channel): adapters over :class:`~requant_plugin.calib.WeightCalibrator`.

The observer runs the exact search once per *distinct* weight tensor (same storage, offset,
shape, strides, dtype, device, version counter and checksum: a no-op, so pt2e's per-batch weight
observation costs a few cheap checks after the first batch); a different tensor replaces the
result. Buffers (saved in ``state_dict``; empty until a weight was seen): ``min_val``,
``max_val`` (data range), ``alpha`` (range factor chosen in the searched space) and
``clip_min``, ``clip_max`` (the clipping range handed to ``_calculate_qparams``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..calib.weight import WeightCalibrator
from ..options import Search, Space
from .base import PER_CHANNEL, PER_TENSOR, RELU_MEAN_RATIO, SEARCH_CHOICES, ObserverMixinBase

__all__ = ["RELU_MEAN_RATIO", "SEARCH_CHOICES", "PerChannelWeightObserverMixin", "WeightObserverMixin"]


class WeightObserverMixin(ObserverMixinBase):
    """REQuant for a weight tensor: the exact search on the tensor itself, cached per weight."""

    per_channel = False
    calibrator: WeightCalibrator
    min_val: Tensor
    max_val: Tensor
    alpha: Tensor
    clip_min: Tensor
    clip_max: Tensor

    def __init__(
        self,
        dtype: torch.dtype = torch.qint8,
        qscheme: torch.qscheme = torch.per_tensor_symmetric,
        *args: Any,
        search: Search | str = "golden",
        alpha: float | None = None,
        space: Space | str = "uniform",
        p: float = 0.5,
        grid_points: int = 2000,
        input_mean_ratio: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """The arguments after ``qscheme`` (``reduce_range``, ``quant_min``, ``quant_max``,
        ``factory_kwargs``, ``eps``, ``is_dynamic``) are torch's, passed on unchanged. Beyond them:

        search: ``"golden"`` (default, fast exact search), ``"grid"`` (dense reference over
            ``grid_points`` alphas) or ``"minmax"`` (``alpha = 1``: torch's min-max observer).
        alpha: pin the range factor instead of searching.
        space: ``"uniform"`` or ``"sqrt"`` (search on ``sign(w) * (|w| / m) ** p``; the backend
            still gets a uniform grid, clipped to the chosen range mapped back to ``w``).
        p: exponent of the ``"sqrt"`` transform.
        input_mean_ratio: ``rho = E[x]**2 / Var[x]`` assumed for the layer inputs; ``rho > 0``
            searches the coherent objective (weight MSE plus ``rho * (sum of errors)**2`` per
            channel) instead of the plain weight MSE; :data:`RELU_MEAN_RATIO` (0.467) is a ReLU of
            a standard normal.
        """
        super().__init__(dtype, qscheme, *args, **kwargs)  # type: ignore[call-arg]
        self._check_qscheme()
        self._setup_requant(search, alpha, grid_points)
        self.calibrator = WeightCalibrator(
            self._buffers, grid=self.grid, ch_axis=0 if self.per_channel else None, search=self._core_search(),
            fixed_alpha=self.fixed_alpha, space=space, p=p, grid_points=self.grid_points,
            input_mean_ratio=input_mean_ratio, name=type(self).__name__, **self._factory_kwargs(),
        )
        self.space = str(self.calibrator.space)
        self.p = self.calibrator.p
        self.input_mean_ratio = self.calibrator.input_mean_ratio

    def _check_qscheme(self) -> None:
        if self.qscheme not in PER_TENSOR:
            raise ValueError(
                f"{type(self).__name__} is per-tensor: qscheme must be per_tensor_affine or "
                f"per_tensor_symmetric, got {self.qscheme}; use the PerChannel class for per-channel"
            )

    @property
    def searches(self) -> int:
        """Number of REQuant searches run (for tests and diagnostics)."""
        return self.calibrator.searches

    def forward(self, x_orig: Tensor) -> Tensor:
        """Run (or reuse) the REQuant search for this weight; returns ``x_orig`` unchanged."""
        if self._check_input(x_orig):
            self.calibrator.collect(x_orig)
        return x_orig

    def calculate_qparams(self, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """``_calculate_qparams(clip_min, clip_max)``: torch's scale/zero point for REQuant's range."""
        rng = self.calibrator.compute_range()
        if rng is None:
            return self._default_qparams()
        return self._qparams_for_range(rng.lo, rng.hi)

    def reset_min_max_vals(self) -> None:
        """Forget the observed weight."""
        self.calibrator.reset()

    def extra_repr(self) -> str:
        a = self.alpha
        shown = "none" if a.numel() == 0 else (f"{float(a):.4f}" if a.numel() == 1 else
                                               f"[{float(a.min()):.4f}, {float(a.max()):.4f}]")
        return (f"search={self.search}, space={self.space}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, qscheme={self.qscheme}, alpha={shown}")


class PerChannelWeightObserverMixin(WeightObserverMixin):
    """Per-channel REQuant weights: one range factor per slice along ``ch_axis``."""

    per_channel = True

    def __init__(
        self,
        ch_axis: int = 0,
        dtype: torch.dtype = torch.qint8,
        qscheme: torch.qscheme = torch.per_channel_symmetric,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """``ch_axis``: the channel axis (0 = output channels of conv/linear weights); the rest as
        :class:`WeightObserverMixin` (torch's ``PerChannelMinMaxObserver`` argument order)."""
        super().__init__(dtype, qscheme, *args, **kwargs)
        self.ch_axis = int(ch_axis) if ch_axis is not None else 0

    @property
    def ch_axis(self) -> int:
        """The channel axis (the calibrator's)."""
        axis = self.calibrator.ch_axis
        return 0 if axis is None else axis

    @ch_axis.setter
    def ch_axis(self, value: int) -> None:
        self.calibrator.ch_axis = int(value)

    def _check_qscheme(self) -> None:
        if self.qscheme not in PER_CHANNEL:
            raise ValueError(
                f"{type(self).__name__} is per-channel: qscheme must be per_channel_affine or "
                f"per_channel_symmetric, got {self.qscheme}"
            )
