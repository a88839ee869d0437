"""Weight observers that carry a given grid: a :func:`~requant_plugin.quantize_weights` result
(e.g. ``recipe="beyond"``: output objective, error-feedback codes, bias correction) into the
torch.ao FX and torchao pt2e flows.

The quantized model's weights already lie on their grid, ``w = scale * (q - zero_point)`` per
channel, so the observer only has to find that grid among the reported ones and hand its
``(scale, zero_point)`` to the backend, which then recovers exactly the codes REQuant chose. A
weight on no grid (BatchNorm folded after quantization, a different model) raises.
Mixed into torch.ao's and torchao's observer bases by :mod:`requant_plugin.observers` and
:mod:`requant_plugin.pt2e`; :func:`pinned_grids` turns a report into the observer's grids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ._observer_base import _PER_CHANNEL, _PER_TENSOR, _check_float, _REQuantMixinBase, tensor_key

#: Largest distance (in codes) of a weight from its pinned grid that still counts as on it.
_GRID_TOLERANCE = 1e-3


def pinned_weight_args(est: Any, *, dtype: torch.dtype = torch.qint8) -> dict[str, Any]:
    """Observer arguments (``scale``, ``zero_point``, ``quant_min``, ``quant_max``, ``qscheme``,
    ``dtype``, ``ch_axis``) for the grid of a :class:`~requant_plugin.RangeEstimate`.

    A uniform grid only (``space="uniform"``). Unsigned code ranges ``[0, 2**b - 1]`` are moved
    to ``qint8``'s ``[-2**(b-1), 2**(b-1) - 1]`` with the zero points shifted alike (the same
    grid in ``w``); ``dtype=torch.quint8`` keeps them unsigned.
    """
    if est.space != "uniform":
        raise ValueError(
            f"a {est.space!r}-space (non-uniform) weight grid cannot be carried by a uniform backend; "
            "quantize with a uniform recipe (recipe='beyond' or space='uniform')"
        )
    qmin, qmax = int(est.quant_min), int(est.quant_max)
    zp = est.zero_point.detach().reshape(-1).to(torch.int64).cpu()
    if dtype == torch.qint8 and qmin >= 0:
        shift = (qmax - qmin + 1) // 2
        qmin, qmax, zp = qmin - shift, qmax - shift, zp - shift
    elif dtype == torch.quint8 and qmin < 0:
        shift = -qmin
        qmin, qmax, zp = qmin + shift, qmax + shift, zp + shift
    symmetric = bool(est.symmetric) and bool((zp == 0).all())
    if est.per_channel:
        qscheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
    else:
        qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    return dict(
        scale=[float(s) for s in est.scale.detach().double().reshape(-1).cpu()],
        zero_point=[int(z) for z in zp], quant_min=qmin, quant_max=qmax, qscheme=qscheme, dtype=dtype,
        ch_axis=int(est.ch_axis) if est.per_channel else 0,
    )


def pinned_grids(weight_ranges: Any, *, dtype: torch.dtype = torch.qint8) -> list[dict[str, Any]]:
    """One :func:`pinned_weight_args` dict (plus ``layer``) per layer of a ``quantize_weights``
    report or ``{layer: RangeEstimate}`` mapping."""
    from .ptq.report import range_table

    return [dict(pinned_weight_args(est, dtype=dtype), layer=name) for name, est in range_table(weight_ranges).items()]


def grids_span(grids: Sequence[Mapping[str, Any]]) -> tuple[int, int, bool]:
    """``(quant_min, quant_max)`` covering every grid, and whether all are symmetric (zero point 0
    everywhere): the observer range a quantizer spec must declare for them."""
    return (min(int(g["quant_min"]) for g in grids), max(int(g["quant_max"]) for g in grids),
            all(not any(g["zero_point"]) for g in grids))


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
    t = _GRID_TOLERANCE
    return (float((codes - codes.round()).abs().max()) <= t and float(codes.min()) >= grid["quant_min"] - t
            and float(codes.max()) <= grid["quant_max"] + t)


class PinnedWeightObserverMixin(_REQuantMixinBase):
    """Hands the backend the given grid of the weight it observes.

    ``grids``: the grids of every layer of a ``quantize_weights`` result (:func:`pinned_grids`).
    The observer finds the one grid the observed weight lies on (``w / scale + zero_point``
    integer and inside the grid's code range; the per-channel scales of different layers do not
    put another layer's weight on integers), keeps its ``scale`` and ``zero_point`` as buffers
    (saved in ``state_dict``) and returns them from ``calculate_qparams``. So one config (the
    global one) serves every layer and the quantizer annotates the graph exactly as without
    pinned weights. A weight on no grid, or on several, raises ValueError.
    """

    _resizable = ("scale", "zero_point")
    scale: Tensor
    zero_point: Tensor

    def __init__(
        self,
        grids: Sequence[Mapping[str, Any]] = (),
        dtype: torch.dtype = torch.qint8,
        qscheme: torch.qscheme = torch.per_channel_affine,
        *args: Any,
        ch_axis: int = 0,
        **kwargs: Any,
    ) -> None:
        """``grids``: dicts with ``layer``, ``scale``, ``zero_point``, ``quant_min``, ``quant_max``,
        ``ch_axis`` (see :func:`pinned_grids`); ``quant_min``/``quant_max`` must hold every grid.
        The arguments after ``qscheme`` are torch's observer arguments, passed on unchanged."""
        super().__init__(dtype, qscheme, *args, **kwargs)  # type: ignore[call-arg]
        if self.qscheme not in _PER_CHANNEL + _PER_TENSOR:
            raise ValueError(f"unsupported qscheme {self.qscheme} for pinned weight grids")
        self.grids = [dict(g) for g in grids]
        if not self.grids:
            raise ValueError("PinnedWeightObserver needs the grids of a quantize_weights result (weight_ranges)")
        for g in self.grids:
            s = torch.as_tensor(g["scale"], dtype=torch.float64)
            z = torch.as_tensor(g["zero_point"], dtype=torch.int64)
            if s.numel() != z.numel() or s.numel() == 0:
                raise ValueError(f"layer {g.get('layer')!r}: {s.numel()} scales and {z.numel()} zero points")
            if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
                raise ValueError(f"layer {g.get('layer')!r}: scales must be finite and positive")
            if g["quant_min"] < int(self.quant_min) or g["quant_max"] > int(self.quant_max):
                raise ValueError(
                    f"layer {g.get('layer')!r}: codes [{g['quant_min']}, {g['quant_max']}] exceed the observer's "
                    f"range [{self.quant_min}, {self.quant_max}]; pass weight_bits covering every layer"
                )
            if bool((z < g["quant_min"]).any()) or bool((z > g["quant_max"]).any()):
                raise ValueError(f"layer {g.get('layer')!r}: zero points outside [{g['quant_min']}, {g['quant_max']}]")
        self.ch_axis = int(ch_axis)
        self.layer: str | None = None
        self._weight_key: tuple[Any, ...] | None = None
        dev = self.eps.device
        self.register_buffer("scale", torch.tensor([], dtype=torch.float32, device=dev))
        self.register_buffer("zero_point", torch.tensor([], dtype=torch.int64, device=dev))

    def forward(self, x_orig: Tensor) -> Tensor:
        """Find the grid the weight lies on; returns ``x_orig`` unchanged."""
        if x_orig.numel() == 0:
            return x_orig
        _check_float(x_orig, type(self).__name__)
        key = tensor_key(x_orig)
        if key == self._weight_key and self.scale.numel():  # pt2e observes every batch: same weight
            return x_orig
        with torch.no_grad():
            w = x_orig.detach().double().cpu()
            hits = []
            for g in self.grids:
                codes = _codes(w, g)
                if codes is not None and _on_grid(codes, g):
                    hits.append(g)
        if len(hits) != 1:
            where = "no grid" if not hits else f"the grids of {[g['layer'] for g in hits]}"
            same = [g["layer"] for g in self.grids if _codes(w, g) is not None]
            raise ValueError(
                f"{type(self).__name__}: a weight of shape {tuple(x_orig.shape)} (layers with its channel count: "
                f"{same}) lies on {where} of weight_ranges: "
                "prepare the model returned by quantize_weights together with its report, quantized with "
                "fold_bn=True (BatchNorm folded into the weights afterwards moves them off their grids)"
            )
        g = hits[0]
        self.layer = str(g["layer"])
        self.ch_axis = int(g["ch_axis"])
        dev = self.eps.device
        self._set_buffer("scale", torch.as_tensor(g["scale"], dtype=torch.float32, device=dev))
        self._set_buffer("zero_point", torch.as_tensor(g["zero_point"], dtype=torch.int64, device=dev))
        self._weight_key = key
        return x_orig

    def _invalidate(self) -> None:
        self._weight_key = None

    def calculate_qparams(self, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """The matched grid's ``(scale, zero_point)``."""
        if self.scale.numel() == 0:
            return self._default_qparams()
        return self.scale.clone(), self.zero_point.clone()

    def extra_repr(self) -> str:
        return (f"layer={self.layer!r}, grids={len(self.grids)}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, qscheme={self.qscheme}")


__all__ = ["PinnedWeightObserverMixin", "grids_span", "pinned_grids", "pinned_weight_args"]
