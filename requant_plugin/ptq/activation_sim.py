"""Simulated activation quantization while the weights are calibrated (``act_bits``).

With ``inputs="quantized"`` and ``act_bits=b``, every calibrated layer's input in the model being
quantized is fake-quantized per tensor, asymmetric, to ``b`` bits,
``x_hat = s (clip(round(x / s) + z, 0, 2^b - 1) - z)``, on the range REQuant's activation search
picks on the float model's inputs (:class:`~requant_plugin.calib.HistogramCalibrator`, the
calibrator of the activation observers). The paired statistics then see the activations a W/A
deployment (pt2e, FX, TensorRT at ``b`` bits) computes with, so the compensated target
``W*`` and the sequential bias correction absorb the activation error as well as the upstream
weight error. With ``act_shortcuts=True`` (opt-in), where the layers stream over the traced graph
(:class:`~.stream.GraphStream`), the value a layer reads is itself replaced by its quantized
version, so its other readers (a residual shortcut) see it quantized too, as an integer graph
computes it (pt2e and TensorRT quantize the tensor once, for every reader); the per-layer fallback
quantizes only the layer's own input. The hooks live only for the call;
:func:`fake_quant_activations` removes them (the CLI pipeline evaluates its W/A rows with the same hook).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor, nn

from ..calib import HistogramCalibrator
from ..core import Grid
from ..range.fake_quant import fake_quant_per_tensor
from .calibration import _eval_forward

__all__ = ["ActQParams", "activation_qparams", "fake_quant_activations", "input_quantizers"]


@dataclass(frozen=True)
class ActQParams:
    """Per-tensor activation quantization of one layer input (``alpha``: the range factor searched)."""

    scale: float
    zero_point: int
    quant_min: int
    quant_max: int
    alpha: float

    def quantize(self, x: Tensor) -> Tensor:
        """``x`` fake-quantized on this range (:func:`~requant_plugin.range.fake_quant.fake_quant_per_tensor`)."""
        return fake_quant_per_tensor(x, self.scale, self.zero_point, self.quant_min, self.quant_max)

    @property
    def bits(self) -> int:
        """Bit width of the code range ``[quant_min, quant_max]``."""
        return int(self.quant_max - self.quant_min + 1).bit_length() - 1


def activation_qparams(model: nn.Module, names: Sequence[str], batches: Sequence[Tensor],
                       bits: int) -> dict[str, ActQParams]:
    """REQuant's activation range of each layer's input in ``model`` (one forward pass per batch)."""
    grid = Grid.from_bits(bits)
    mods = dict(model.named_modules())
    cals = {n: HistogramCalibrator(grid=grid, name=n) for n in names}
    handles = []
    for n in names:
        def observe(_m: nn.Module, args: tuple[object, ...], cal: HistogramCalibrator = cals[n]) -> None:
            x = args[0]
            if isinstance(x, Tensor) and x.numel():
                cal.collect(x.detach())

        handles.append(mods[n].register_forward_pre_hook(observe))
    try:
        with _eval_forward(model) as feed:
            for x in batches:
                feed(x)
    finally:
        for h in handles:
            h.remove()
    out: dict[str, ActQParams] = {}
    for n, cal in cals.items():
        rng = cal.compute_range()
        if rng is None:
            continue
        s, z = grid.base_qparams(np.array([float(rng.lo.min())]), np.array([float(rng.hi.max())]))
        out[n] = ActQParams(float(s[0]), int(z[0]), grid.quant_min, grid.quant_max, float(cal.last_alpha or 1.0))
    return out


def input_quantizers(qparams: Mapping[str, ActQParams]) -> dict[str, Callable[[Tensor], Tensor]]:
    """Each layer's input quantizer, ONE per distinct range: layers reading one value each hold an equal (not the
    same) :class:`ActQParams`, and a value is quantized once for all its readers only where they agree on it
    (:meth:`~.stream.GraphStream.share_input_quantization`; bound methods compare their objects by identity)."""
    same: dict[ActQParams, ActQParams] = {}
    return {n: same.setdefault(qp, qp).quantize for n, qp in qparams.items()}


@contextlib.contextmanager
def fake_quant_activations(model: nn.Module, qparams: dict[str, ActQParams] | None) -> Iterator[None]:
    """Within the block, fake-quantize the first input of each layer named in ``qparams``
    (:func:`~requant_plugin.range.fake_quant.fake_quant_per_tensor`: the deployed q/dq pair's numbers;
    forward pre-hooks removed on exit)."""
    mods = dict(model.named_modules())
    handles = []

    def hook(qp: ActQParams) -> Any:
        def fake_quantize(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (qp.quantize(args[0]), *args[1:])

        return fake_quantize

    try:
        for n, qp in (qparams or {}).items():
            handles.append(mods[n].register_forward_pre_hook(hook(qp)))
        yield
    finally:
        for h in handles:
            h.remove()
