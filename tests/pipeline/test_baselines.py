"""Min-max weights and simulated activation quantization of the pipeline, against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from requant_plugin.pipeline.baselines import (
    activation_qparams,
    calibrate_activations,
    fake_quant_activations,
    minmax_quantize_weights,
)


def test_minmax_weights_match_torch_observer() -> None:
    """Per-tensor affine min-max equals torch.ao's MinMaxObserver + fake_quantize at 4 bits."""
    from torch.ao.quantization.observer import MinMaxObserver

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    out, mse = minmax_quantize_weights(net, 4)
    for name in ("0", "3"):
        w = net.get_submodule(name).weight.detach()
        obs = MinMaxObserver(dtype=torch.quint8, quant_min=0, quant_max=15)
        obs(w)
        s, z = obs.calculate_qparams()
        ref = torch.fake_quantize_per_tensor_affine(w, float(s), int(z), 0, 15)
        got = out.get_submodule(name).weight.detach()
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
        assert mse[name] == pytest.approx(float((w.double() - ref.double()).pow(2).mean()), rel=1e-5)
    assert not torch.equal(out.get_submodule("0").weight, net.get_submodule("0").weight)  # copy


def test_activation_fake_quant_matches_closed_form() -> None:
    """Input of a Linear layer is fake-quantized with the calibrated min-max range."""
    torch.manual_seed(1)
    lin = nn.Linear(6, 3)
    net = nn.Sequential(lin)
    calib = [torch.randn(16, 6) * 2.0 for _ in range(3)]
    hists = calibrate_activations(net, calib)
    qp = activation_qparams(hists, 3, "minmax")["0"]
    allx = torch.cat(calib)
    lo, hi = min(float(allx.min()), 0.0), max(float(allx.max()), 0.0)
    scale = (hi - lo) / 7
    zp = int(np.clip(round(-lo / scale), 0, 7))
    assert qp.scale == pytest.approx(scale, rel=1e-9)
    assert qp.zero_point == zp and (qp.quant_min, qp.quant_max) == (0, 7)
    x = torch.randn(5, 6) * 3.0
    q = torch.clamp(torch.round(x / scale) + zp, 0, 7)
    expected = lin(scale * (q - zp))
    with torch.no_grad(), fake_quant_activations(net, {"0": qp}):
        got = net(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(net(x), lin(x))  # hooks removed after the block


def test_requant_activation_range_beats_minmax_on_outliers() -> None:
    """With one large outlier, REQuant clips (alpha < 1) and its MSE on the data is lower."""
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(size=20000), [40.0]]).astype(np.float32)
    net = nn.Sequential(nn.Linear(1, 1))
    hists = calibrate_activations(net, [torch.from_numpy(data).reshape(-1, 1)])
    mm, rq = activation_qparams(hists, 4, "minmax")["0"], activation_qparams(hists, 4, "requant")["0"]
    assert mm.alpha == 1.0 and rq.alpha < 0.5

    def mse(qp) -> float:
        x = torch.from_numpy(data)
        y = torch.fake_quantize_per_tensor_affine(x, qp.scale, qp.zero_point, qp.quant_min, qp.quant_max)
        return float((x - y).pow(2).mean())

    assert mse(rq) < 0.5 * mse(mm)


def test_end_bits_put_the_first_and_last_layer_at_their_own_width() -> None:
    """``end_bits``: min-max weights of the first and last layer on 256 codes, the middle one on 4;
    their inputs' activation qparams at 8 bits, the middle one's at 2 (closed-form code counts)."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 5))
    out, _ = minmax_quantize_weights(net, 2, end_bits=8)
    for name, codes in (("0", 256), ("2", 4), ("5", 256)):
        w = net.get_submodule(name).weight.detach().double()
        got = out.get_submodule(name).weight.detach().double()
        s = (w.max() - w.min()) / (codes - 1)
        # every value sits on the min-max grid of its own width (within float32 rounding)
        steps = (got - got.min()) / s
        assert torch.allclose(steps, steps.round(), atol=1e-3), name
        assert int(steps.round().unique().numel()) <= codes, name
    assert int(torch.unique(out.get_submodule("2").weight).numel()) <= 4
    assert int(torch.unique(out.get_submodule("0").weight).numel()) > 4
    hists = calibrate_activations(net, [torch.randn(16, 3, 6, 6)])
    qp = activation_qparams(hists, 2, "minmax", widths={"0": 8, "5": 8})
    assert {n: (q.quant_max - q.quant_min + 1) for n, q in qp.items()} == {"0": 256, "2": 4, "5": 256}
