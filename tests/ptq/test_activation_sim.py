"""``act_bits``: the weights are calibrated on inputs whose activations are fake-quantized as a
W/A deployment quantizes them; the grid against torch's own per-tensor fake quantizer, the
network output error of the W4A4 model against calibrating with float activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from refs.nets import make_depthwise_net as model
from refs.nets import random_batches as data
from torch import nn

from requant_plugin import quantize_weights
from requant_plugin.ptq.activation_sim import ActQParams, activation_qparams, fake_quant_activations


def fq(x: torch.Tensor, qp: ActQParams) -> torch.Tensor:
    """The closed-form per-tensor quantizer ``s (clip(round(x / s) + z, lo, hi) - z)`` in float64."""
    q = torch.clamp(torch.round(x / qp.scale) + qp.zero_point, qp.quant_min, qp.quant_max)
    return (q - qp.zero_point) * qp.scale


def _inputs(m: nn.Module, name: str, xs: list[torch.Tensor]) -> torch.Tensor:
    got: list[torch.Tensor] = []
    h = dict(m.named_modules())[name].register_forward_pre_hook(lambda _m, a: got.append(a[0].detach()))
    with torch.no_grad():
        for x in xs:
            m(x)
    h.remove()
    return torch.cat([g.flatten() for g in got])


@pytest.mark.parametrize("bits", [4, 8])
def test_ranges_are_no_worse_than_min_max(bits: int) -> None:
    m, cal = model(0), data(0)
    names = [n for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    qps = activation_qparams(m, names, cal, bits)
    assert set(qps) == set(names)
    qmax = (1 << bits) - 1
    for n in names:
        x = _inputs(m, n, cal).double()
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        s = (hi - lo) / qmax
        mm = ActQParams(s, int(np.clip(round(-lo / s), 0, qmax)), 0, qmax, 1.0)
        err = float(((fq(x, qps[n]) - x) ** 2).mean())
        assert err <= float(((fq(x, mm) - x) ** 2).mean()) * (1 + 1e-6), n
        assert qps[n].quant_max == qmax and 0 <= qps[n].zero_point <= qmax and 0 < qps[n].alpha <= 1


def test_simulation_quantizes_inside_the_block_only() -> None:
    m, cal = model(1), data(1)
    name = "3"  # the second convolution
    qps = activation_qparams(m, [name], cal, 3)
    with torch.no_grad():
        before = m(cal[0])
    with fake_quant_activations(m, qps):
        assert torch.unique(_inputs(m, name, cal[:1])).numel() <= 8
    with torch.no_grad():
        torch.testing.assert_close(m(cal[0]), before, rtol=0, atol=0)
    assert not any(mod._forward_pre_hooks for mod in m.modules())


def w4a4_output_error(ref: nn.Module, q: nn.Module, qps: dict[str, ActQParams],
                      xs: list[torch.Tensor]) -> float:
    with torch.no_grad(), fake_quant_activations(q, qps):
        return float(sum(((ref(x) - q(x)) ** 2).mean() for x in xs) / len(xs))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simulated_activations_lower_the_w4a4_output_error(seed: int) -> None:
    m, cal, held_out = model(seed), data(seed), data(seed + 100)
    before = [p.detach().clone() for p in m.parameters()]
    names = [n for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    err = {}
    for act_bits in (None, 4):
        q, rep = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=act_bits)
        assert rep.settings["act_bits"] == act_bits
        assert not any(mod._forward_pre_hooks for mod in q.modules())  # the simulation is gone
        err[act_bits] = w4a4_output_error(m, q, activation_qparams(m, names, cal, 4), held_out)
    assert err[4] < err[None], err
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))  # user's model untouched


def test_act_bits_need_quantized_inputs_and_a_valid_width() -> None:
    with pytest.raises(ValueError, match="needs inputs='quantized'"):
        quantize_weights(model(0), 4, recipe="beyond", calibration_data=data(0), inputs="float", act_bits=4)
    with pytest.raises(ValueError, match="bits=9 is not supported"):
        quantize_weights(model(0), 4, recipe="beyond", calibration_data=data(0), act_bits=9)


def test_act_bits_on_a_channels_last_mobilenet_v3() -> None:
    """Hardswish, squeeze-excite and depthwise layers in channels_last: the simulation runs, leaves no
    hook, keeps the layout, changes the calibrated weights, and does not touch the user's model."""
    from benchmarks.archs.mobilenet import mobilenet_v3_small

    torch.manual_seed(0)
    m = mobilenet_v3_small(10).eval().to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    cal = [torch.randn(4, 3, 32, 32, generator=g).to(memory_format=torch.channels_last) for _ in range(2)]
    before = [p.detach().clone() for p in m.parameters()]
    out = {}
    for act_bits in (None, 4):
        q, rep = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=act_bits)
        assert rep.settings["act_bits"] == act_bits
        assert not any(mod._forward_pre_hooks or mod._forward_hooks for mod in q.modules())
        conv = q.features[0][0]
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            out[act_bits] = q(cal[0])
        assert torch.isfinite(out[act_bits]).all()
    assert not torch.equal(out[None], out[4])  # the weights were calibrated on other inputs
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))


def test_end_bits_calibrate_the_end_layers_on_their_own_input_width() -> None:
    m, cal = model(0), data(0)
    names = [n for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    _, rep = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=4, end_bits=8)
    ends = {names[0], names[-1]}
    assert rep.act_bits == {n: 8 if n in ends else 4 for n in names}
    assert {x.name: x.bits for x in rep.layers} == {n: 8 if n in ends else 4 for n in names}
    assert rep.settings["end_bits"] == 8
    eight = activation_qparams(m, sorted(ends), cal, 8)  # the end layers' ranges: REQuant's 8-bit search
    assert all(q.quant_max == 255 and q.bits == 8 for q in eight.values())
