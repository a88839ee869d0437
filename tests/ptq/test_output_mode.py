"""quantize_weights(objective="output", rounding=..., recipe=...): the calibration-data modes.

References: layer outputs computed by the layers' own forward passes, the closed-form
per-channel asymmetric grid, and torch's per-channel fake quantization.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from requant_plugin import quantize_weights
from requant_plugin.ptq.output_search import OutputLayerReport, search_layer_output
from requant_plugin.ptq.presets import PRESETS, apply_recipe


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    ).eval()


DATA = [torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
NAMES = ["0", "3", "6", "10"]


def _inputs(model: nn.Module, name: str) -> list[torch.Tensor]:
    got: list[torch.Tensor] = []
    h = model.get_submodule(name).register_forward_pre_hook(lambda m, a: got.append(a[0].detach()))
    with torch.no_grad():
        for x in DATA:
            model(x)
    h.remove()
    return got


def test_needs_calibration_data_and_validates_arguments() -> None:
    net = _net()
    with pytest.raises(ValueError, match="needs calibration_data"):
        quantize_weights(net, 4, objective="output")
    with pytest.raises(ValueError, match="needs calibration_data"):
        quantize_weights(net, 4, bias_correction="sequential")
    with pytest.raises(ValueError, match="objective"):
        quantize_weights(net, 4, objective="activations", calibration_data=DATA)
    with pytest.raises(ValueError, match="rounding"):
        quantize_weights(net, 4, rounding="stochastic", objective="output", calibration_data=DATA)
    with pytest.raises(ValueError, match="feedback"):
        quantize_weights(net, 4, rounding="feedback")
    with pytest.raises(ValueError, match="recipe"):
        quantize_weights(net, 4, recipe="magic")
    with pytest.raises(ValueError, match="no batch"):
        quantize_weights(net, 4, objective="output", calibration_data=[])


@pytest.mark.parametrize("rounding", ["nearest", "feedback"])
def test_report_output_mse_equals_the_layer_output_error(rounding: str) -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    q, rep = quantize_weights(net, 3, space="uniform", per_channel=True, objective="output", rounding=rounding,
                              calibration_data=DATA, calibration_rows=None)
    for k, v in net.state_dict().items():  # the user's model is untouched
        assert torch.equal(v, before[k])
    for name in NAMES:
        lr = rep[name]
        assert isinstance(lr, OutputLayerReport) and lr.objective == "output"
        fl, ql = net.get_submodule(name), q.get_submodule(name)
        with torch.no_grad():  # same float inputs through both layers; biases cancel
            d = torch.cat([(fl(x) - ql(x)).transpose(0, 1).reshape(fl.weight.shape[0], -1) if x.dim() == 4
                           else (fl(x) - ql(x)).T for x in _inputs(net, name)], dim=1)
        ref = float(d.double().pow(2).mean())
        assert lr.output_mse == pytest.approx(ref, rel=1e-3)


def test_uniform_per_channel_result_lies_on_its_integer_grid() -> None:
    net = _net()
    q, rep = quantize_weights(net, 3, space="uniform", per_channel=True, objective="output", rounding="feedback",
                              bias_correction=True, calibration_data=DATA)
    for name in NAMES:
        est = rep[name].estimate
        assert est is not None and est.p == 1.0 and est.per_channel
        w = q.get_submodule(name).weight.detach().double()
        s = est.scale.reshape(-1, *[1] * (w.dim() - 1))
        z = est.zero_point.double().reshape(s.shape)
        codes = w / s + z
        torch.testing.assert_close(codes, codes.round(), atol=1e-4, rtol=0)
        assert codes.min() >= -1e-4 and codes.max() <= 7 + 1e-4
        # torch's own per-channel fake quantization with these qparams leaves the weight unchanged
        fq = torch.fake_quantize_per_channel_affine(w.float(), est.scale.float(), est.zero_point.int(), 0, 0, 7)
        torch.testing.assert_close(fq, w.float(), atol=1e-6, rtol=0)


def test_output_objective_lowers_output_error_against_weight_objective() -> None:
    net = _net()
    _, rw = quantize_weights(net, 2, space="uniform", per_channel=True, calibration_data=DATA,
                             bias_correction="plain")
    _, ro = quantize_weights(net, 2, space="uniform", per_channel=True, objective="output", calibration_data=DATA,
                             bias_correction="plain")
    for name in NAMES:
        assert rw[name].output_mse is not None and ro[name].output_mse is not None
        assert ro[name].output_mse <= rw[name].output_mse * (1 + 1e-9)


@pytest.mark.parametrize("space", ["uniform", "sqrt"])
def test_feedback_rounding_on_the_weight_objective_grid(space: str) -> None:
    net = _net()
    kw = dict(space=space, per_channel=True, calibration_data=DATA, transform_first_last=True)
    qn, rn = quantize_weights(net, 3, **kw)
    qf, rf = quantize_weights(net, 3, rounding="feedback", **kw)
    for name in NAMES:
        est = rf[name].estimate
        assert est is not None and torch.equal(est.scale, rn[name].estimate.scale)  # same grid
        wf = qf.get_submodule(name).weight.detach()
        torch.testing.assert_close(est.fake_quantize(wf), wf, atol=1e-6, rtol=1e-5)  # on the grid
        assert not torch.equal(wf, qn.get_submodule(name).weight.detach())
    total_n = sum(rn[n].output_mse for n in NAMES)
    total_f = sum(rf[n].output_mse for n in NAMES)
    assert total_f < total_n


def test_transform_exponent_search_picks_from_the_candidates() -> None:
    torch.manual_seed(1)
    w = torch.randn(6, 12) * torch.rand(6, 1)
    x = torch.relu(torch.randn(500, 12)).double()
    g = (x.T @ x / 500).numpy()
    sols = {p: search_layer_output(w, g, 3, p=p) for p in (0.5, 0.75, 1.0)}
    both = search_layer_output(w, g, 3, p=(0.5, 0.75, 1.0))
    assert both.p in (0.5, 0.75, 1.0)
    assert both.output_mse == pytest.approx(min(s.output_mse for s in sols.values()), rel=1e-12)
    assert sols[0.75].estimate.space == "sqrt" and sols[1.0].estimate.space == "uniform"
    for sol in sols.values():  # the RangeEstimate reproduces the searched weight (nearest rounding)
        torch.testing.assert_close(sol.estimate.fake_quantize(w), sol.weight, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="p must"):
        search_layer_output(w, g, 3, p=(0.0,))


def test_recipe_fills_defaults_and_explicit_values_win() -> None:
    kw = apply_recipe("beyond", dict(symmetric=True))  # only what the caller wrote
    assert kw["space"] == "uniform" and kw["per_channel"] and kw["rounding"] == "feedback"
    assert kw["symmetric"] is True  # explicit non-default value kept
    kw = apply_recipe("beyond", dict(space="sqrt", per_channel=False, objective="weight"))
    assert kw["space"] == "sqrt" and kw["per_channel"] is False and kw["objective"] == "weight"
    assert kw["rounding"] == "feedback"  # explicit values win even at their defaults (issue 15)
    net = _net()
    _, rep = quantize_weights(net, 4, recipe="beyond", calibration_data=DATA)
    assert rep.settings["objective"] == "output" and rep.settings["per_channel"] is True
    assert rep.settings["bias_correction"] == "sequential" and rep.settings["inputs"] == "quantized"
    assert set(PRESETS) >= {"paper", "beyond", "beyond-tensorrt", "data-free"}


def test_default_call_is_unchanged_weight_objective() -> None:
    net = _net()
    _, rep = quantize_weights(net, 4)
    assert all(layer.objective == "weight" and layer.output_mse is None for layer in rep.layers)
    assert rep.settings["bias_correction"] is None


def test_unsupported_layers_fall_back_to_the_weight_objective() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 4, 2), nn.Flatten(), nn.Linear(4 * 7 * 7, 2)).eval()
    q, rep = quantize_weights(net, 4, space="uniform", per_channel=True, objective="output",
                              calibration_data=torch.randn(4, 3, 8, 8), bias_correction="plain")
    assert rep["1"].objective == "weight" and "weight objective" in rep["1"].note
    assert rep["0"].objective == "output" and rep["3"].objective == "output"
    assert np.isfinite(q(torch.randn(2, 3, 8, 8)).detach().numpy()).all()
