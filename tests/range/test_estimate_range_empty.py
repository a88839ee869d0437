"""Issue 15 item 8: an empty tensor gives an empty-consistent estimate for every layout (no raw
reshape error): one neutral range (alpha 1, mse 0) per channel, zero channels included."""

from __future__ import annotations

import pytest
import torch

from requant_plugin import estimate_range


@pytest.mark.parametrize(("shape", "ch_axis", "channels"), [
    ((0, 4), 0, 0), ((0, 4), 1, 4), ((4, 0), 0, 4), ((3, 0, 2), 1, 0), ((0,), 0, 0), ((2, 0, 3), -1, 3),
])
@pytest.mark.parametrize("space", ["uniform", "sqrt"])
def test_empty_tensor_per_channel(shape: tuple[int, ...], ch_axis: int, channels: int, space: str) -> None:
    w = torch.empty(shape)
    est = estimate_range(w, 4, per_channel=True, ch_axis=ch_axis, space=space)
    assert est.alpha.shape == est.scale.shape == est.mse.shape == (channels,)
    assert torch.equal(est.alpha, torch.ones(channels, dtype=torch.float64))
    assert torch.equal(est.mse, torch.zeros(channels, dtype=torch.float64))
    assert est.evaluations == 0
    assert est.fake_quantize(w).shape == w.shape and est.quantize(w).shape == w.shape
    assert est.levels().shape == (channels, 16)


def test_empty_tensor_per_tensor_matches_the_per_channel_convention() -> None:
    est = estimate_range(torch.empty(0, 4), 4)
    assert est.alpha.shape == () and float(est.alpha) == 1.0 and float(est.mse) == 0.0
