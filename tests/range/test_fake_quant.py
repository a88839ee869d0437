"""fake_quant_per_tensor against torch's decomposed q/dq pair (what a pt2e converted graph runs), bit for bit,
and against torch.fake_quantize_per_tensor_affine (the same grid; only ties of 1/scale rounding may differ)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.quantization.fx import _decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed)

from requant_plugin.range.fake_quant import fake_quant_per_tensor

GRIDS = [(0, 255, torch.uint8), (-128, 127, torch.int8), (0, 15, torch.uint8), (-8, 7, torch.int8)]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), log_scale=st.floats(-8.0, 2.0), grid=st.sampled_from(GRIDS),
       zp_frac=st.floats(0.0, 1.0), spread=st.floats(0.1, 100.0))
def test_equals_the_decomposed_quantize_dequantize_pair(seed: int, log_scale: float, grid: tuple[int, int, torch.dtype],
                                                        zp_frac: float, spread: float) -> None:
    lo, hi, dtype = grid
    scale = float(2.0 ** log_scale) * 1.37
    zp = round(lo + zp_frac * (hi - lo))
    x = torch.randn(4, 257, generator=torch.Generator().manual_seed(seed)) * spread * scale * (hi - lo) / 8
    x[0, :5] = torch.tensor([0.0, scale * 0.5, -scale * 0.5, scale * (hi - zp + 3), scale * (lo - zp - 3)])
    ops = torch.ops.quantized_decomposed
    want = ops.dequantize_per_tensor(ops.quantize_per_tensor(x, scale, zp, lo, hi, dtype), scale, zp, lo, hi, dtype)
    before = x.clone()
    got = fake_quant_per_tensor(x, scale, zp, lo, hi)
    assert torch.equal(got, want)
    assert torch.equal(x, before)  # the input is left alone
    ref = torch.fake_quantize_per_tensor_affine(x, scale, zp, lo, hi)
    assert float((got - ref).abs().max()) <= scale * (1 + 1e-6)  # same grid: at most one step apart, at ties
    assert float((got != ref).float().mean()) < 0.01
