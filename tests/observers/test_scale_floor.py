"""The smallest scale ``eps`` against tiny activation ranges: :class:`ScaleFloorWarning`.

References: torch's scale rule in closed form (``(max(max, 0) - min(min, 0)) / (quant_max - quant_min)``,
symmetric ``2 max(|min|, |max|)`` over the same, raised to ``eps``), torch's ``MinMaxObserver`` for the
qparams the warning leaves unchanged, and the float model for the end-to-end pt2e flow.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.ao.quantization.observer import MinMaxObserver

from requant_plugin.observers import REQuantObserver, ScaleFloorWarning

EPS = 2.0**-12


def _observer(data: torch.Tensor, eps: float = EPS, symmetric: bool = False) -> REQuantObserver:
    if symmetric:
        obs = REQuantObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, eps=eps, search="minmax")
    else:
        obs = REQuantObserver(eps=eps, search="minmax")
    obs(data)
    return obs


def _qparams_quietly(obs: REQuantObserver) -> tuple[torch.Tensor, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScaleFloorWarning)
        return obs.calculate_qparams()


def test_tiny_range_warns_with_the_fix_and_keeps_torchs_qparams() -> None:
    x = torch.linspace(-1e-4, 2e-4, 1000)
    obs = _observer(x)
    with pytest.warns(ScaleFloorWarning, match=r"eps=1e-7|ObserverSpec\(eps=") as rec:
        scale, zp = obs.calculate_qparams()
    msg = str(rec[0].message)
    assert "0.000244" in msg and "[-0.0001, 0.0002]" in msg
    ref = MinMaxObserver(eps=EPS)
    ref(x)
    ref_scale, ref_zp = ref.calculate_qparams()
    assert torch.equal(scale, ref_scale) and torch.equal(zp, ref_zp)  # a warning, not another result


def test_smaller_eps_is_quiet_and_resolves_the_range() -> None:
    x = torch.linspace(-1e-4, 2e-4, 1000)
    obs = _observer(x, eps=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleFloorWarning)
        scale, _ = obs.calculate_qparams()
    assert float(scale) == pytest.approx(3e-4 / 255, rel=1e-5)


@pytest.mark.parametrize("symmetric", [False, True])
@given(ratio=st.floats(0.05, 20.0), sign=st.sampled_from([-1.0, 1.0]))
@settings(max_examples=40, deadline=None)
def test_warns_exactly_when_the_needed_scale_is_a_quarter_of_eps_or_less(symmetric: bool, ratio: float,
                                                                        sign: float) -> None:
    steps = 255
    need = ratio * EPS / 4  # the scale torch's rule asks for, before eps raises it
    span = need * steps
    hi = span / 2 if symmetric else span
    x = torch.tensor([0.0, sign * hi], dtype=torch.float64).float()
    obs = _observer(x, symmetric=symmetric)
    lo_f, hi_f = float(x.min()), float(x.max())
    exact = (2 * max(-min(lo_f, 0), max(hi_f, 0)) if symmetric else max(hi_f, 0) - min(lo_f, 0)) / steps
    if abs(exact * 4 / EPS - 1) < 1e-6:
        return  # on the boundary float32 rounding decides
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        obs.calculate_qparams()
    warned = any(issubclass(w.category, ScaleFloorWarning) for w in rec)
    assert warned == (exact * 4 <= EPS)


def test_constant_and_empty_inputs_do_not_warn() -> None:
    for data in (torch.zeros(100), torch.full((100,), 3.0)):
        obs = _observer(data)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ScaleFloorWarning)
            obs.calculate_qparams()


class _TinyBranch(nn.Module):
    """A conv whose output is scaled to about 1e-5 (a near-zero branch), then a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)
        with torch.no_grad():
            self.conv.weight.mul_(1e-5)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))  # type: ignore[no-any-return]


def test_pt2e_flow_reports_the_floor_and_a_smaller_eps_fixes_the_output() -> None:
    pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")
    from requant_plugin.observers.flows import quantize_pt2e
    from requant_plugin.pt2e import get_requant_quantizer

    torch.manual_seed(0)
    model = _TinyBranch().eval()
    cal = [torch.randn(4, 3, 8, 8) for _ in range(2)]
    test = torch.randn(8, 3, 8, 8)
    with torch.no_grad():
        ref = model(test)
    with pytest.warns(ScaleFloorWarning):
        floored, _ = quantize_pt2e(model, get_requant_quantizer(8, 8), cal)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleFloorWarning)
        fixed, _ = quantize_pt2e(model, get_requant_quantizer(8, 8, eps=1e-9), cal)
    with torch.no_grad():
        err_floored = float((floored(test) - ref).abs().max())
        err_fixed = float((fixed(test) - ref).abs().max())
    assert err_fixed < 0.1 * err_floored
