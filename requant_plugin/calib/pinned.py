"""The pinned-grid calibrator: finds, among given grids, the one a weight already lies on.

The weights of a :func:`~requant_plugin.quantize_weights` result lie on their grids,
``w = scale * (q - zero_point)`` per channel, so ``collect(w)`` finds the one grid with
``w / scale + zero_point`` integer (within :data:`GRID_TOLERANCE`) and inside its code range, and
keeps its ``scale`` / ``zero_point`` buffers; ``compute_range`` returns them (the backend then
recovers exactly the codes REQuant chose). A weight on no grid, or on several, raises ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .base import Buffers, Calibrator, tensor_key

__all__ = ["GRID_TOLERANCE", "PinnedCalibrator", "PinnedQParams"]

#: Largest distance (in codes) of a weight from its pinned grid that still counts as on it.
GRID_TOLERANCE = 1e-3


class PinnedQParams(NamedTuple):
    """The matched grid's ``(scale, zero_point)``."""

    scale: Tensor
    zero_point: Tensor


def _codes(w: Tensor, grid: Mapping[str, Any]) -> Tensor | None:
    """``w / scale + zero_point`` on the grid's channel axis (``None``: channel count differs)."""
    scale = torch.as_tensor(grid["scale"], dtype=torch.float64)
    zp = torch.as_tensor(grid["zero_point"], dtype=torch.float64)
    shape = [1] * w.dim()
    if scale.numel() > 1:
        axis = int(grid["ch_axis"]) % w.dim()
        if w.shape[axis] != scale.numel():
            return None
        shape[axis] = -1
    return w / scale.reshape(shape) + zp.reshape(shape)


def _on_grid(codes: Tensor, grid: Mapping[str, Any]) -> bool:
    t = GRID_TOLERANCE
    return (float((codes - codes.round()).abs().max()) <= t and float(codes.min()) >= grid["quant_min"] - t
            and float(codes.max()) <= grid["quant_max"] + t)


class PinnedCalibrator(Calibrator[PinnedQParams]):
    """The grid (of ``grids``) that the observed weight lies on; codes must fit ``[quant_min, quant_max]``."""

    resizable = ("scale", "zero_point")

    def __init__(self, buffers: Buffers | None = None, *, grids: Sequence[Mapping[str, Any]],
                 quant_min: int, quant_max: int, name: str = "PinnedCalibrator", device: Any = None) -> None:
        super().__init__(buffers)
        self.grids = [dict(g) for g in grids]
        self.name = name
        if not self.grids:
            raise ValueError("PinnedWeightObserver needs the grids of a quantize_weights result (weight_ranges)")
        for g in self.grids:
            s = torch.as_tensor(g["scale"], dtype=torch.float64)
            z = torch.as_tensor(g["zero_point"], dtype=torch.int64)
            if s.numel() != z.numel() or s.numel() == 0:
                raise ValueError(f"layer {g.get('layer')!r}: {s.numel()} scales and {z.numel()} zero points")
            if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
                raise ValueError(f"layer {g.get('layer')!r}: scales must be finite and positive")
            if g["quant_min"] < quant_min or g["quant_max"] > quant_max:
                raise ValueError(
                    f"layer {g.get('layer')!r}: codes [{g['quant_min']}, {g['quant_max']}] exceed the observer's "
                    f"range [{quant_min}, {quant_max}]; pass weight_bits covering every layer"
                )
            if bool((z < g["quant_min"]).any()) or bool((z > g["quant_max"]).any()):
                raise ValueError(f"layer {g.get('layer')!r}: zero points outside [{g['quant_min']}, {g['quant_max']}]")
        self.layer: str | None = None
        self.ch_axis = 0
        self.weight_key: tuple[Any, ...] | None = None
        if "scale" not in self.buffers:
            self.buffers["scale"] = torch.tensor([], dtype=torch.float32, device=device)
            self.buffers["zero_point"] = torch.tensor([], dtype=torch.int64, device=device)

    def collect(self, x: Tensor) -> None:
        """Find the grid the weight lies on (the same tensor again: nothing to do)."""
        key = tensor_key(x)
        if key == self.weight_key and self.buffers["scale"].numel():  # pt2e observes every batch: same weight
            return
        with torch.no_grad():
            w = x.detach().double().cpu()
            hits = [g for g in self.grids if (codes := _codes(w, g)) is not None and _on_grid(codes, g)]
        if len(hits) != 1:
            where = "no grid" if not hits else f"the grids of {[g['layer'] for g in hits]}"
            same = [g["layer"] for g in self.grids if _codes(w, g) is not None]
            raise ValueError(
                f"{self.name}: a weight of shape {tuple(x.shape)} (layers with its channel count: "
                f"{same}) lies on {where} of weight_ranges: "
                "prepare the model returned by quantize_weights together with its report, quantized with "
                "fold_bn=True (BatchNorm folded into the weights afterwards moves them off their grids); "
                "a weight used by a functional call (F.conv2d(x, self.weight), F.linear) is not a layer "
                "quantize_weights quantizes: hold it in an nn.Conv2d/nn.Linear module, or use the pt2e flow"
            )
        g = hits[0]
        self.layer = str(g["layer"])
        self.ch_axis = int(g["ch_axis"])
        self.set_buffer("scale", torch.as_tensor(g["scale"], dtype=torch.float32))
        self.set_buffer("zero_point", torch.as_tensor(g["zero_point"], dtype=torch.int64))
        self.weight_key = key

    def invalidate(self) -> None:
        self.weight_key = None

    def compute_range(self) -> PinnedQParams | None:
        """The matched grid's ``(scale, zero_point)`` (copies; ``None`` before a weight)."""
        if self.buffers["scale"].numel() == 0:
            return None
        return PinnedQParams(self.buffers["scale"].clone(), self.buffers["zero_point"].clone())

    def reset(self) -> None:
        for name in self.resizable:
            self.buffers[name].resize_(0)
        self.weight_key = None
