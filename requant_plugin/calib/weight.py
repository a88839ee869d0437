"""The weight calibrator: REQuant's exact search on a weight tensor, run once per distinct weight.

``collect(w)`` computes the data range ``[lo, hi]`` (per tensor, or per slice along ``ch_axis``)
and ``alpha = argmin_alpha MSE(w, Q_alpha(w))`` on ``grid`` (:func:`requant_plugin.estimate_range`;
with ``input_mean_ratio = rho > 0`` the coherent objective ``(sum d**2 + rho * (sum d)**2) / n``).
``space="sqrt"`` searches the grid of ``T(w) = sign(w) * (|w| / m) ** p`` and maps the range back
to ``w``: ``T^-1(alpha * T([lo, hi])) = alpha ** (1 / p) * [lo, hi]``. A tensor whose
:func:`~requant_plugin.calib.base.tensor_key` was seen last is skipped (pt2e observes weights on
every batch). Buffers: ``min_val``, ``max_val``, ``alpha``, ``clip_min``, ``clip_max`` (empty
before a weight); ``compute_range`` returns ``[clip_min, clip_max]``. DDP ranks see the same
weights, so there is no merge rule (rank 0's state is kept).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core import CoherentErrorObjective, Grid, golden_search, grid_search, objective_for_rows
from ..options import Search, Space
from ..range import estimate_range, rows_of
from ..range.threads import search_in_blocks
from .base import Buffers, Calibrator, ClipRange, tensor_key

__all__ = ["WEIGHT_BUFFERS", "WeightCalibrator"]

WEIGHT_BUFFERS = ("min_val", "max_val", "alpha", "clip_min", "clip_max")


class WeightCalibrator(Calibrator[ClipRange]):
    """REQuant range of one weight tensor on ``grid``; ``ch_axis=None`` is per tensor."""

    resizable = WEIGHT_BUFFERS

    def __init__(self, buffers: Buffers | None = None, *, grid: Grid,
                 ch_axis: int | None = None, **options: Any) -> None:
        """``options``: ``search`` (golden/grid), ``fixed_alpha``, ``space``, ``p``, ``grid_points``,
        ``input_mean_ratio``, ``name``, ``device``/``dtype`` of the buffers (created when missing)."""
        super().__init__(buffers)
        self.grid, self.ch_axis = grid, ch_axis
        self.search = Search.parse(options.get("search", "golden"))
        self.fixed_alpha: float | None = options.get("fixed_alpha")
        self.space = Space.parse(options.get("space", "uniform"))
        self.p = float(options.get("p", 0.5))
        if not 0.0 < self.p <= 1.0:
            raise ValueError(f"the transform exponent p must be in (0, 1], got {options.get('p')}")
        rho = float(options.get("input_mean_ratio", 0.0))
        if not (math.isfinite(rho) and rho >= 0.0):
            raise ValueError(f"input_mean_ratio must be a finite number >= 0, got {options.get('input_mean_ratio')}")
        self.input_mean_ratio = rho
        self.grid_points = int(options.get("grid_points", 2000))
        self.name = str(options.get("name", type(self).__name__))
        self.weight_key: tuple[Any, ...] | None = None
        self.searches = 0  # number of REQuant searches run (for tests and diagnostics)
        for name in WEIGHT_BUFFERS:
            if name not in self.buffers:
                self.buffers[name] = torch.tensor([], device=options.get("device"), dtype=options.get("dtype"))

    @property
    def per_channel(self) -> bool:
        return self.ch_axis is not None

    def axis(self, x: Tensor) -> int:
        """``ch_axis`` as a non-negative axis of ``x`` (ValueError when out of range; 0 per tensor)."""
        if self.ch_axis is None:
            return 0
        if not -x.dim() <= self.ch_axis < x.dim():
            raise ValueError(f"{self.name}: ch_axis={self.ch_axis} is out of range for a "
                             f"{x.dim()}-D weight of shape {tuple(x.shape)}")
        return self.ch_axis % x.dim()

    def invalidate(self) -> None:
        self.weight_key = None

    def _data_range(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = x.to(torch.float32)
        if not self.per_channel:
            lo, hi = torch.aminmax(y)
            return lo, hi
        ax = self.axis(x)
        y = y.movedim(ax, 0).reshape(x.shape[ax], -1)
        if y.shape[1] == 0:
            z = torch.zeros(x.shape[ax], device=x.device)
            return z, z.clone()
        lo, hi = torch.aminmax(y, dim=1)
        return lo, hi

    def collect(self, x: Tensor) -> None:
        """Run (or reuse, for the same tensor) the REQuant search for this weight."""
        key = tensor_key(x)
        if self.weight_key is not None and self.buffers["clip_min"].numel() > 0 and key == self.weight_key:
            return
        with torch.no_grad():
            self._observe(x.detach())
        self.weight_key = key

    def _observe(self, x: Tensor) -> None:
        lo, hi = self._data_range(x)
        if not (bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all())):
            raise ValueError(f"{self.name}: the weight has NaN/Inf values; REQuant needs finite "
                             "weights (fix the layer or exclude it from quantization)")
        if self.fixed_alpha is not None:
            alpha = torch.full(lo.shape, self.fixed_alpha, dtype=torch.float64, device=x.device)
            factor = alpha
        elif self.input_mean_ratio > 0.0:
            alpha = self._coherent_search(x).reshape(lo.shape)
            factor = alpha if self.space == Space.UNIFORM else alpha ** (1.0 / self.p)
        else:
            g = self.grid
            est = estimate_range(
                x, quant_min=g.quant_min, quant_max=g.quant_max, symmetric=g.symmetric,
                per_channel=self.per_channel, ch_axis=self.axis(x), space=self.space.value,
                search=self.search.value, p=self.p, convention="torch", grid_points=self.grid_points,
                name=self.name,
            )
            self.searches += 1
            alpha = est.alpha.to(device=x.device, dtype=torch.float64).reshape(lo.shape)
            factor = alpha if self.space == Space.UNIFORM else alpha ** (1.0 / self.p)
        # alpha == 1 keeps lo/hi bit-exact (float32 -> float64 -> float32)
        clip_lo = (factor * lo.double()).float()
        clip_hi = (factor * hi.double()).float()
        for name, val in zip(WEIGHT_BUFFERS, (lo, hi, alpha, clip_lo, clip_hi), strict=True):
            self.set_buffer(name, val)

    def _coherent_search(self, x: Tensor) -> Tensor:
        """The alpha search on :class:`CoherentErrorObjective` (one alpha per row)."""
        rows = rows_of(x, self.per_channel, self.axis(x))
        p = 1.0 if self.space == Space.UNIFORM else self.p

        def block(b: slice) -> np.ndarray:
            obj = CoherentErrorObjective(objective_for_rows(rows[b], self.grid, p=p), self.input_mean_ratio)
            if self.search == Search.GRID:
                return grid_search(obj, self.grid_points).alpha
            return golden_search(obj, scan_rows=len(rows)).alpha

        alpha = search_in_blocks(block, rows)
        self.searches += 1
        return torch.as_tensor(alpha, dtype=torch.float64, device=x.device)

    def compute_range(self) -> ClipRange | None:
        """``[clip_min, clip_max]`` of the last weight (``None`` before one)."""
        if self.buffers["clip_min"].numel() == 0:
            return None
        return ClipRange(self.buffers["clip_min"], self.buffers["clip_max"])

    def reset(self) -> None:
        for name in WEIGHT_BUFFERS:
            self.buffers[name].resize_(0)
        self.weight_key = None
