"""torchao ``AffineQuantizedMSEObserver`` (torchao 0.18, ``torchao.quantization.observer``).

The observer runs a linear search over 100 clipping candidates ``(-t_i, t_i)`` with
``t_i = max(|min|, max) * i / 100`` (always symmetric candidates, whatever the mapping
type), fake-quantizing the tensor for each one, and keeps the lowest MSE per block. We
instantiate it exactly as a user would (``MappingType.ASYMMETRIC`` or ``SYMMETRIC``,
``target_dtype=torch.int8`` with ``quant_min/quant_max`` of the bit width, ``PerTensor()`` or
``PerAxis(0)``), call it on the weight, and fake-quantize with its ``calculate_qparams()``
using torchao's own ``_fake_quantize_affine`` (a private helper: torchao 0.18 exposes no
public fake-quant function).
"""

from __future__ import annotations

import warnings

import torch

NAME = "torchao AffineQuantizedMSEObserver"
EVALUATIONS = 100


def quantize_weight(
    w: torch.Tensor,
    bits: int,
    *,
    per_channel: bool = False,
    symmetric: bool = False,
    ch_axis: int = 0,
    steps: int = EVALUATIONS,
) -> torch.Tensor:
    """Fake-quantize ``w`` with the qparams torchao's MSE observer picks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchao.quantization.granularity import PerAxis, PerTensor
        from torchao.quantization.observer import AffineQuantizedMSEObserver
        from torchao.quantization.quant_primitives import MappingType, _fake_quantize_affine
        from torchao.quantization.utils import get_block_size

    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    gran = PerAxis(ch_axis) if per_channel else PerTensor()
    mapping = MappingType.SYMMETRIC if symmetric else MappingType.ASYMMETRIC
    x = w.detach().float()
    obs = AffineQuantizedMSEObserver(
        mapping,
        torch.int8,
        gran,
        quant_min=qmin,
        quant_max=qmax,
        eps=torch.finfo(torch.float32).eps,
        steps=steps,
    )
    obs(x)
    scale, zp = obs.calculate_qparams()
    block = get_block_size(x.shape, gran)
    out = _fake_quantize_affine(x, block, scale, zp, torch.int8, qmin, qmax)
    return out.to(w.dtype)
