"""The min-max baseline and simulated (fake-quant) activation quantization.

Min-max weights (``alpha = 1``): for each Conv/Linear weight, per tensor or per output
channel, the range ``[min(w, 0), max(w, 0)]`` (asymmetric) or ``+-max|w|`` (symmetric) is cut
into a uniform b-bit grid with torch.ao's conventions:

* asymmetric: ``s = (hi - lo) / (2**b - 1)``, ``z = clamp(round(-lo / s), 0, 2**b - 1)``,
  codes ``[0, 2**b - 1]``;
* symmetric: ``s = max|w| / ((2**b - 1) / 2)``, ``z = 0``, codes ``[-2**(b-1), 2**(b-1) - 1]``;

and ``w_hat = s * (clamp(round_half_even(w / s) + z) - z)`` (torch's own fake-quant ops).

Activations: forward pre-hooks record the input of every quantizable layer in a
:class:`~requant_plugin.core.StreamingHistogram` during calibration; evaluation then
fake-quantizes each such input per tensor on an unsigned b-bit grid, with the min-max range
or REQuant's range searched on the histogram. This simulates ``W?A{b}`` inference the way
torch.ao/pt2e reference graphs compute it, without their conversion machinery.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..core import Grid, StreamingHistogram
from ..ptq import first_last, quantizable_layers, weight_ch_axis
from ..ptq.activation_sim import ActQParams, fake_quant_activations

__all__ = [
    "ActQParams", "activation_qparams", "calibrate_activations", "fake_quant_activations",
    "minmax_quantize_weights",
]


@torch.no_grad()
def _minmax_fake_quant(w: Tensor, bits: int, symmetric: bool, per_channel: bool, axis: int) -> Tensor:
    x = w.detach().float()
    if per_channel:
        dims = [d for d in range(x.dim()) if d != axis]
        lo = x.amin(dim=dims) if dims else x
        hi = x.amax(dim=dims) if dims else x
    else:
        lo, hi = x.min().reshape(1), x.max().reshape(1)
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    if symmetric:
        qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2.0)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = torch.zeros_like(scale, dtype=torch.int32)
    else:
        qmin, qmax = 0, 2**bits - 1
        scale = (hi - lo) / float(qmax - qmin)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = torch.clamp(torch.round(-lo / scale), qmin, qmax).to(torch.int32)
    if per_channel:
        out = torch.fake_quantize_per_channel_affine(x, scale, zp, axis, qmin, qmax)
    else:
        out = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), qmin, qmax)
    return out.to(w.dtype)


def end_widths(model: nn.Module, end_bits: int | None) -> dict[str, int]:
    """``{first layer, last layer: end_bits}`` of ``model``'s Conv/Linear layers (empty without ``end_bits``)."""
    if end_bits is None:
        return {}
    return dict.fromkeys(first_last([n for n, _ in quantizable_layers(model)]), end_bits)


def minmax_quantize_weights(
    model: nn.Module, bits: int, *, symmetric: bool = False, per_channel: bool = False, end_bits: int | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """A copy of ``model`` with min-max fake-quantized weights (the first and last layer at
    ``end_bits`` when given), and the weight MSE per layer."""
    out = copy.deepcopy(model)
    mse: dict[str, float] = {}
    widths = end_widths(out, end_bits)
    for name, module in quantizable_layers(out):
        w = module.weight
        assert isinstance(w, Tensor)
        q = _minmax_fake_quant(w, widths.get(name, bits), symmetric, per_channel, weight_ch_axis(module))
        mse[name] = float((w.detach().double() - q.double()).pow(2).mean()) if w.numel() else 0.0
        with torch.no_grad():
            w.copy_(q)
    return out, mse


@contextlib.contextmanager
def _hooks(model: nn.Module, make_hook: Any) -> Iterator[None]:
    handles = [m.register_forward_pre_hook(make_hook(n)) for n, m in quantizable_layers(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def calibrate_activations(
    model: nn.Module, batches: Iterable[Tensor], *, progress: bool = False, bins: int = 2048
) -> dict[str, StreamingHistogram]:
    """Histogram of the input of every Conv/Linear layer over the calibration batches."""
    hists: dict[str, StreamingHistogram] = {n: StreamingHistogram(bins) for n, _ in quantizable_layers(model)}

    def make_hook(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            hists[name].update(args[0].detach().float().cpu().numpy().ravel())
        return hook

    was_training = model.training
    model.eval()
    batch_list = list(batches)
    try:
        with _hooks(model, make_hook):
            for xb in tqdm(batch_list, desc="calibrate activations", unit="batch", disable=not progress):
                model(xb)
    finally:
        model.train(was_training)
    return hists


def activation_qparams(
    hists: dict[str, StreamingHistogram], bits: int, method: str, widths: dict[str, int] | None = None,
) -> dict[str, ActQParams]:
    """Unsigned b-bit per-tensor qparams per layer input: ``method`` ``"minmax"`` or ``"requant"``;
    ``widths``: layers whose input is quantized at their own width instead of ``bits``."""
    out: dict[str, ActQParams] = {}
    for name, hist in hists.items():
        if hist.empty:
            continue
        grid = Grid.from_bits((widths or {}).get(name, bits))
        if method == "minmax":
            s, z = grid.base_qparams(np.array([hist.min]), np.array([hist.max]))
            alpha = 1.0
        elif method == "requant":
            est = hist.estimate(grid)
            s, z, alpha = est.scale, est.zero_point, float(est.alpha[0])
        else:
            raise ValueError(f"unknown activation method {method!r}: use 'minmax' or 'requant'")
        out[name] = ActQParams(max(float(s[0]), 1e-12), int(z[0]), grid.quant_min, grid.quant_max, alpha)
    return out


