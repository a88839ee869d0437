"""Per-tensor fake quantization with the numbers of torch's decomposed q/dq pair.

``dequantize(quantize(x)) = (clamp(round(x * (1 / s)) + z, q_min, q_max) - z) * s``, as the pt2e
converted graph computes it (``quantized_decomposed.quantize_per_tensor`` then
``dequantize_per_tensor``; ``x * (1 / s)`` in float32, the shift by the integer ``z`` exact), bit for
bit, in four passes over a new tensor. ``torch.fake_quantize_per_tensor_affine`` also builds a
gradient mask: several times slower on CPU.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["fake_quant_per_tensor"]


def fake_quant_per_tensor(x: Tensor, scale: float, zero_point: int, quant_min: int, quant_max: int) -> Tensor:
    """``(clamp(round(x / scale) + zero_point, quant_min, quant_max) - zero_point) * scale`` in float32
    (``x`` not modified; no gradient)."""
    zp = int(zero_point)
    out = x.float() * (1.0 / float(scale))
    return out.round_().clamp_(quant_min - zp, quant_max - zp).mul_(float(scale))
