"""Weight observers that carry a given grid: a :func:`~requant_plugin.quantize_weights` result
(e.g. ``recipe="beyond"``: output objective, error-feedback codes, bias correction) into the
torch.ao FX and torchao pt2e flows; a thin adapter over :class:`~requant_plugin.calib.PinnedCalibrator`.

The quantized model's weights already lie on their grid, ``w = scale * (q - zero_point)`` per
channel, so the observer only has to find that grid among the reported ones and hand its
``(scale, zero_point)`` to the backend, which then recovers exactly the codes REQuant chose. A
weight on no grid (BatchNorm folded after quantization, a different model) raises.
:func:`pinned_grids` turns a report into the observer's grids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..calib.pinned import PinnedCalibrator
from .activation import ActivationObserverMixin
from .base import PER_CHANNEL, PER_TENSOR, ObserverMixinBase, qscheme_for

__all__ = ["PinnedActivationObserverMixin", "PinnedWeightObserverMixin", "grids_span", "pinned_grids",
           "pinned_input_ranges", "pinned_weight_args"]


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
    return dict(
        scale=[float(s) for s in est.scale.detach().double().reshape(-1).cpu()],
        zero_point=[int(z) for z in zp], quant_min=qmin, quant_max=qmax,
        qscheme=qscheme_for(bool(est.per_channel), symmetric), dtype=dtype,
        ch_axis=int(est.ch_axis) if est.per_channel else 0,
    )


def pinned_grids(weight_ranges: Any, *, dtype: torch.dtype = torch.qint8) -> list[dict[str, Any]]:
    """One :func:`pinned_weight_args` dict (plus ``layer``) per layer of a ``quantize_weights``
    report or ``{layer: RangeEstimate}`` mapping."""
    from ..ptq.report import range_table

    return [dict(pinned_weight_args(est, dtype=dtype), layer=name) for name, est in range_table(weight_ranges).items()]


def grids_span(grids: Sequence[Mapping[str, Any]]) -> tuple[int, int, bool]:
    """``(quant_min, quant_max)`` covering every grid, and whether all are symmetric (zero point 0
    everywhere): the observer range a quantizer spec must declare for them."""
    return (min(int(g["quant_min"]) for g in grids), max(int(g["quant_max"]) for g in grids),
            all(not any(g["zero_point"]) for g in grids))


class PinnedWeightObserverMixin(ObserverMixinBase):
    """Hands the backend the given grid of the weight it observes.

    ``grids``: the grids of every layer of a ``quantize_weights`` result (:func:`pinned_grids`).
    The observer finds the one grid the observed weight lies on (``w / scale + zero_point``
    integer and inside the grid's code range; the per-channel scales of different layers do not
    put another layer's weight on integers), keeps its ``scale`` and ``zero_point`` as buffers
    (saved in ``state_dict``) and returns them from ``calculate_qparams``. So one config (the
    global one) serves every layer and the quantizer annotates the graph exactly as without
    pinned weights. A weight on no grid, or on several, raises ValueError.
    """

    calibrator: PinnedCalibrator
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
        if self.qscheme not in PER_CHANNEL + PER_TENSOR:
            raise ValueError(f"unsupported qscheme {self.qscheme} for pinned weight grids")
        self.calibrator = PinnedCalibrator(self._buffers, grids=grids, quant_min=int(self.quant_min),
                                           quant_max=int(self.quant_max), name=type(self).__name__,
                                           device=self.eps.device)
        self.calibrator.ch_axis = int(ch_axis)

    @property
    def grids(self) -> list[dict[str, Any]]:
        return self.calibrator.grids

    @property
    def layer(self) -> str | None:
        """The layer whose grid the observed weight lies on (``None`` before a weight)."""
        return self.calibrator.layer

    @property
    def ch_axis(self) -> int:
        """The channel axis of the matched grid (the ``ch_axis`` argument before a weight)."""
        return self.calibrator.ch_axis

    @ch_axis.setter
    def ch_axis(self, value: int) -> None:
        self.calibrator.ch_axis = int(value)

    def forward(self, x_orig: Tensor) -> Tensor:
        """Find the grid the weight lies on; returns ``x_orig`` unchanged."""
        if self._check_input(x_orig):
            self.calibrator.collect(x_orig)
        return x_orig

    def calculate_qparams(self, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """The matched grid's ``(scale, zero_point)``."""
        found = self.calibrator.compute_range()
        if found is None:
            return self._default_qparams()
        return found.scale, found.zero_point

    def extra_repr(self) -> str:
        return (f"layer={self.layer!r}, grids={len(self.grids)}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, qscheme={self.qscheme}")


def pinned_input_ranges(weight_ranges: Any) -> dict[str, tuple[int, float, float]]:
    """``{layer: (bits, lo, hi)}``: the input ranges a ``quantize_weights(..., act_bits=)`` report simulated,
    ``[scale * (quant_min - zero_point), scale * (quant_max - zero_point)]`` (``{}`` for anything else)."""
    return {name: (int(qp.bits), float(qp.scale) * (qp.quant_min - qp.zero_point),
                   float(qp.scale) * (qp.quant_max - qp.zero_point))
            for name, qp in getattr(weight_ranges, "act_qparams", {}).items()}


class PinnedActivationObserverMixin(ActivationObserverMixin):
    """An activation observer with a given clipping range ``[lo, hi]`` (the range the weights were
    calibrated against: :func:`pinned_input_ranges`): ``calculate_qparams`` returns
    ``_calculate_qparams(f * lo, f * hi)`` with ``f`` the ``range_factor`` buffer (so the network-level
    refinement still scales it). It still streams its statistics like the searched observer (``merge``,
    ``state_dict``); the range is the ``pinned_range`` buffer."""

    pinned_range: Tensor

    def __init__(self, dtype: torch.dtype = torch.quint8, qscheme: torch.qscheme = torch.per_tensor_affine,
                 *args: Any, lo: float = 0.0, hi: float = 0.0, **kwargs: Any) -> None:
        """``lo <= 0 <= hi`` (a clipping range holds zero); the other arguments are the searched observer's."""
        super().__init__(dtype, qscheme, *args, **kwargs)
        if not (lo <= 0.0 <= hi and hi > lo):
            raise ValueError(f"a pinned activation range must hold zero and be non-empty, got [{lo}, {hi}]")
        self.register_buffer("pinned_range", torch.tensor([float(lo), float(hi)], dtype=torch.float64))

    def calculate_qparams(self, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """``_calculate_qparams(f * lo, f * hi)``."""
        f = self.pinned_range.new_tensor(float(self.range_factor))
        return self._qparams_for_range(f * self.pinned_range[0], f * self.pinned_range[1])

    def extra_repr(self) -> str:
        lo, hi = (float(v) for v in self.pinned_range)
        return f"pinned=[{lo:.6g}, {hi:.6g}], quant_min={self.quant_min}, quant_max={self.quant_max}"
