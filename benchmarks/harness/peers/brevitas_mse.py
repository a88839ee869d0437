"""Brevitas MSE weight quantizers (a real ``brevitas`` install, 0.13.4 on torch 2.13).

Installed with ``pip install --no-deps brevitas "dependencies==2.0.1" unfoldNd``: a plain
``pip install brevitas`` keeps torch 2.13.0 but downgrades setuptools to < 81, so we kept
the shared environment's setuptools (brevitas does not import setuptools at run time).

Symmetric: ``Int8WeightPerTensorFloatMSE`` / ``Int8WeightPerChannelFloatMSE`` (narrow
signed grid ``[-(2**(b-1) - 1), 2**(b-1) - 1]``); asymmetric:
``ShiftedUint8WeightPerTensorFloatMSE`` / ``ShiftedUint8WeightPerChannelFloatMSE`` (unsigned
grid with a zero point; scale and zero point each from their own MSE search), all with
``weight_bit_width=bits``. Brevitas' injectors force ``mse_search_method="grid"``: 20
candidates ``abs-max * k / 20``, ``k = 1..20``. We build the matching ``brevitas.nn`` layer
(``QuantConv1d/2d/3d`` or ``QuantLinear``), load the weight and read ``quant_weight().value``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

NAME = "Brevitas MSE (20-pt grid)"
EVALUATIONS = 20


def _quantizer(per_channel: bool, symmetric: bool) -> type:
    from brevitas.quant.scaled_int import Int8WeightPerChannelFloatMSE, Int8WeightPerTensorFloatMSE
    from brevitas.quant.shifted_scaled_int import (
        ShiftedUint8WeightPerChannelFloatMSE,
        ShiftedUint8WeightPerTensorFloatMSE,
    )

    if symmetric:
        return Int8WeightPerChannelFloatMSE if per_channel else Int8WeightPerTensorFloatMSE
    return ShiftedUint8WeightPerChannelFloatMSE if per_channel else ShiftedUint8WeightPerTensorFloatMSE


def _layer(w: torch.Tensor, quant: type, bits: int) -> Any:
    import brevitas.nn as qnn

    kw = dict(bias=False, weight_quant=quant, weight_bit_width=bits)
    if w.dim() == 2:
        return qnn.QuantLinear(w.shape[1], w.shape[0], **kw)
    conv = {3: qnn.QuantConv1d, 4: qnn.QuantConv2d, 5: qnn.QuantConv3d}[w.dim()]
    return conv(w.shape[1], w.shape[0], tuple(w.shape[2:]), **kw)


def quantize_weight(
    w: torch.Tensor, bits: int, *, per_channel: bool = False, symmetric: bool = False, ch_axis: int = 0
) -> torch.Tensor:
    """Fake-quantize ``w`` with Brevitas' MSE-initialised quantizer (output channels on axis 0)."""
    if ch_axis != 0:
        raise NotImplementedError("brevitas adapter: output channels must be on axis 0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = _layer(w, _quantizer(per_channel, symmetric), bits)
        with torch.no_grad():
            layer.weight.copy_(w.detach().float())
        layer.eval()
        with torch.no_grad():
            out = layer.quant_weight().value
    return out.detach().to(w.dtype).reshape(w.shape)
