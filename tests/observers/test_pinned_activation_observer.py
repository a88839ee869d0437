"""The pinned activation observer (``observers.pinned.PinnedActivationObserverMixin``, pt2e's
``PinnedActivationObserver``): it hands the backend a given clipping range, scaled by the refinement's
factor. References: torchao's ``MinMaxObserver`` on a tensor whose extremes are that range, and the
ranges a ``quantize_weights(..., act_bits=)`` report records."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")

from torchao.quantization.pt2e import MinMaxObserver

from requant_plugin.observers.pinned import pinned_input_ranges
from requant_plugin.pt2e import PinnedActivationObserver


def _minmax(lo: float, hi: float, factor: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    ref = MinMaxObserver(dtype=torch.uint8, quant_min=0, quant_max=15, eps=2.0**-12)
    ref(torch.tensor([lo * factor, hi * factor]))
    return ref.calculate_qparams()


@settings(max_examples=40, deadline=None)
@given(lo=st.floats(-8.0, 0.0), width=st.floats(0.01, 16.0), factor=st.floats(0.3, 1.0))
def test_qparams_are_min_max_of_the_pinned_range(lo: float, width: float, factor: float) -> None:
    hi = width
    obs = PinnedActivationObserver(dtype=torch.uint8, quant_min=0, quant_max=15, eps=2.0**-12, lo=lo, hi=hi)
    obs(torch.randn(64) * 100)  # what it sees does not move the range
    obs.set_range_factor(factor)
    scale, zp = obs.calculate_qparams()
    ref_scale, ref_zp = _minmax(lo, hi, factor)
    assert float(scale) == pytest.approx(float(ref_scale), rel=1e-6) and int(zp) == int(ref_zp)


def test_bad_ranges_are_refused_and_state_round_trips() -> None:
    with pytest.raises(ValueError, match="must hold zero"):
        PinnedActivationObserver(dtype=torch.uint8, quant_min=0, quant_max=15, lo=0.5, hi=2.0)
    with pytest.raises(ValueError, match="must hold zero"):
        PinnedActivationObserver(dtype=torch.uint8, quant_min=0, quant_max=15, lo=0.0, hi=0.0)
    obs = PinnedActivationObserver(dtype=torch.uint8, quant_min=0, quant_max=15, lo=-1.0, hi=3.0)
    obs(torch.randn(32))
    obs.set_range_factor(0.8)
    other = PinnedActivationObserver(dtype=torch.uint8, quant_min=0, quant_max=15, lo=-5.0, hi=5.0)
    other.load_state_dict(obs.state_dict())
    assert [float(v) for v in other.pinned_range] == [-1.0, 3.0]
    assert all(torch.equal(a, b) for a, b in zip(other.calculate_qparams(), obs.calculate_qparams(), strict=True))


def test_pinned_input_ranges_read_a_report() -> None:
    """``(bits, lo, hi)`` per layer from the report's simulated qparams; anything else gives ``{}``."""
    from refs.nets import PoolNet

    from requant_plugin import quantize_weights

    calib = [torch.randn(8, 3, 10, 10, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    torch.manual_seed(0)
    _, rep = quantize_weights(PoolNet().eval(), 4, recipe="beyond-tensorrt", calibration_data=calib, act_bits=4,
                              end_bits=8)
    ranges = pinned_input_ranges(rep)
    assert {n: r[0] for n, r in ranges.items()} == {"conv1": 8, "conv2": 4, "fc": 8} == rep.act_bits
    for name, (bits, lo, hi) in ranges.items():
        qp = rep.act_qparams[name]
        assert lo <= 0.0 <= hi and (hi - lo) == pytest.approx(qp.scale * (2**bits - 1))
    assert pinned_input_ranges(None) == {} and pinned_input_ranges({"conv1": object()}) == {}
