"""Simulated activation quantization while the weights are calibrated (``act_bits``).

With ``inputs="quantized"`` and ``act_bits=b``, every calibrated layer's input in the model being
quantized is fake-quantized per tensor, asymmetric, to ``b`` bits,
``x_hat = s (clip(round(x / s) + z, 0, 2^b - 1) - z)``, on the range REQuant's activation search
picks on the float model's inputs (:class:`~requant_plugin.calib.HistogramCalibrator`, the
calibrator of the activation observers). The paired statistics then see the activations a W/A
deployment (pt2e, FX, TensorRT at ``b`` bits) computes with, so the compensated target
``W*`` and the sequential bias correction absorb the activation error as well as the upstream
weight error. The hooks live only for the call; :func:`simulate_activations` removes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..calib import HistogramCalibrator
from ..core import Grid
from .calibration import _eval_forward

__all__ = ["ActivationQParams", "activation_qparams", "simulate_activations"]


@dataclass(frozen=True)
class ActivationQParams:
    """Per-tensor asymmetric grid of one layer's input: ``scale``, ``zero_point`` on ``[0, quant_max]``."""

    scale: float
    zero_point: int
    quant_max: int

    def fake_quantize(self, x: Tensor) -> Tensor:
        """``s (clip(round(x / s) + z, 0, quant_max) - z)`` (round half to even, as torch's quantizers)."""
        q = torch.clamp(torch.round(x / self.scale) + self.zero_point, 0, self.quant_max)
        return (q - self.zero_point) * self.scale


def activation_qparams(model: nn.Module, names: Sequence[str], batches: Sequence[Tensor],
                       bits: int) -> dict[str, ActivationQParams]:
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
    out: dict[str, ActivationQParams] = {}
    for n, cal in cals.items():
        rng = cal.compute_range()
        if rng is None:
            continue
        s, z = grid.base_qparams(np.array([float(rng.lo.min())]), np.array([float(rng.hi.max())]))
        out[n] = ActivationQParams(float(s[0]), int(z[0]), grid.quant_max)
    return out


@contextlib.contextmanager
def simulate_activations(model: nn.Module, qparams: dict[str, ActivationQParams]) -> Iterator[None]:
    """Fake-quantize the first input of each layer of ``qparams`` inside the block (forward pre-hooks)."""
    mods = dict(model.named_modules())
    handles = []

    def hook(qp: ActivationQParams) -> object:
        def fake_quantize(_m: nn.Module, args: tuple[object, ...]) -> tuple[object, ...] | None:
            x = args[0]
            if not isinstance(x, Tensor) or not x.is_floating_point():
                return None
            return (qp.fake_quantize(x), *args[1:])

        return fake_quantize

    try:
        for n, qp in qparams.items():
            handles.append(mods[n].register_forward_pre_hook(hook(qp)))  # type: ignore[arg-type]
        yield
    finally:
        for h in handles:
            h.remove()
