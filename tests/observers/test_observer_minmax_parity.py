"""Differential tests: REQuant observers with alpha pinned to 1 are torch's min-max observers.

With ``search="minmax"`` the REQuant observers hand the data range itself to torch's
``_calculate_qparams``, so scale and zero point must equal ``MinMaxObserver`` /
``PerChannelMinMaxObserver`` bit for bit, for every dtype, qscheme and sub-8-bit range.
"""

from __future__ import annotations

import pytest
import torch
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from requant_plugin.observers import PerChannelREQuantObserver, REQuantObserver, REQuantWeightObserver

# (dtype, qscheme, quant_min, quant_max): torch defaults, x86 7-bit, 4-bit, narrow TensorRT, symmetric uint8
PER_TENSOR = [
    (torch.quint8, torch.per_tensor_affine, None, None),
    (torch.quint8, torch.per_tensor_affine, 0, 127),
    (torch.quint8, torch.per_tensor_affine, 0, 15),
    (torch.qint8, torch.per_tensor_affine, -8, 7),
    (torch.qint8, torch.per_tensor_symmetric, None, None),
    (torch.qint8, torch.per_tensor_symmetric, -127, 127),
    (torch.qint8, torch.per_tensor_symmetric, -8, 7),
    (torch.quint8, torch.per_tensor_symmetric, None, None),
    (torch.quint8, torch.per_tensor_symmetric, 0, 15),
]
PER_CHANNEL = [
    (torch.qint8, torch.per_channel_symmetric, None, None),
    (torch.qint8, torch.per_channel_symmetric, -8, 7),
    (torch.qint8, torch.per_channel_symmetric, -127, 127),
    (torch.qint8, torch.per_channel_affine, -8, 7),
    (torch.quint8, torch.per_channel_affine, 0, 255),
    (torch.quint8, torch.per_channel_symmetric, 0, 15),
]


def _kw(dtype: torch.dtype, qscheme: torch.qscheme, qmin: int | None, qmax: int | None) -> dict:
    kw: dict = {"dtype": dtype, "qscheme": qscheme}
    if qmin is not None:
        kw.update(quant_min=qmin, quant_max=qmax)
    return kw


def _batches(seed: int, shift: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 6, 5, 5, generator=g) * (1 + i) + shift for i in range(3)]


@pytest.mark.parametrize("cfg", PER_TENSOR)
@pytest.mark.parametrize("shift", [0.0, 2.5, -3.0])
def test_activation_observer_alpha1_equals_minmax(cfg: tuple, shift: float) -> None:
    ours = REQuantObserver(search="minmax", **_kw(*cfg))
    ref = MinMaxObserver(**_kw(*cfg))
    for x in _batches(0, shift):  # running range over several batches
        ours(x)
        ref(x)
    s, z = ours.calculate_qparams()
    rs, rz = ref.calculate_qparams()
    assert torch.equal(s, rs) and torch.equal(z, rz)
    assert torch.equal(ours.min_val, ref.min_val) and torch.equal(ours.max_val, ref.max_val)


@pytest.mark.parametrize("cfg", PER_TENSOR)
def test_per_tensor_weight_observer_alpha1_equals_minmax(cfg: tuple) -> None:
    w = _batches(1, 0.3)[0]
    ours = REQuantWeightObserver(alpha=1.0, **_kw(*cfg))
    ref = MinMaxObserver(**_kw(*cfg))
    ours(w)
    ref(w)
    assert all(torch.equal(a, b) for a, b in zip(ours.calculate_qparams(), ref.calculate_qparams(), strict=True))


@pytest.mark.parametrize("cfg", PER_CHANNEL)
@pytest.mark.parametrize("ch_axis", [0, 1])
def test_per_channel_alpha1_equals_per_channel_minmax(cfg: tuple, ch_axis: int) -> None:
    w = torch.randn(8, 5, 3, 3, generator=torch.Generator().manual_seed(2))
    w[3] = 0.0  # an all-zero channel: torch's eps / zero-range rules must match
    w[5] += 1.0  # an all-positive channel
    ours = PerChannelREQuantObserver(ch_axis=ch_axis, search="minmax", **_kw(*cfg))
    ref = PerChannelMinMaxObserver(ch_axis=ch_axis, **_kw(*cfg))
    ours(w)
    ref(w)
    s, z = ours.calculate_qparams()
    rs, rz = ref.calculate_qparams()
    assert torch.equal(s, rs) and torch.equal(z, rz)


def test_pinned_alpha_scales_the_minmax_scale() -> None:
    """alpha = 0.5 halves the symmetric min-max scale (closed form)."""
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(3))
    ours = PerChannelREQuantObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, alpha=0.5)
    ours(w)
    s, z = ours.calculate_qparams()
    expected = w.abs().amax(dim=1) * 0.5 / 127.5
    torch.testing.assert_close(s, expected, rtol=1e-6, atol=0)
    assert torch.all(z == 0)
