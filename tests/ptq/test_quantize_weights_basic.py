"""quantize_weights: model handling, overrides, first/last rule, BN folding, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from refs.nets import make_depthwise_net, make_seq_bn_net, random_batches
from refs.quantizers import ref_fake_quant
from torch import nn

from requant_plugin import estimate_range, quantize_weights
from requant_plugin.ptq import conv_bn_pairs, fold_bn_


def _net() -> nn.Module:
    net = make_seq_bn_net()
    for m in net.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def test_user_model_untouched_and_weights_quantized() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    q, report = quantize_weights(net, 3, space="uniform")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    for name in ("0", "3", "8"):
        w0 = before[f"{name}.weight"]
        wq = q.get_submodule(name).weight.detach()
        assert len(torch.unique(wq)) <= 8  # at most 2**3 distinct values per tensor
        ref = ref_fake_quant(w0.numpy().ravel(), report[name].alpha, 3, False, "uniform")
        assert np.mean(np.abs(wq.numpy().ravel() - ref) > 1e-6) < 0.01
    assert len(report.layers) == 3


def test_inplace_modifies_given_model() -> None:
    net = _net()
    q, _ = quantize_weights(net, 4, inplace=True)
    assert q is net


def test_first_and_last_layers_are_not_transformed() -> None:
    _, report = quantize_weights(_net(), 4, space="sqrt")
    assert [x.space for x in report.layers] == ["uniform", "sqrt", "uniform"]
    _, report = quantize_weights(_net(), 4, space="sqrt", transform_first_last=True)
    assert [x.space for x in report.layers] == ["sqrt", "sqrt", "sqrt"]


def test_sqrt_layer_uses_non_uniform_levels() -> None:
    net = _net()
    q, report = quantize_weights(net, 4, space="sqrt")
    est = estimate_range(net[3].weight.detach(), 4, space="sqrt")
    torch.testing.assert_close(q[3].weight.detach(), est.fake_quantize(net[3].weight.detach()))
    assert report["3"].alpha == pytest.approx(float(est.alpha))


def test_overrides_bits_skip_and_unknown_names() -> None:
    net = _net()
    q, report = quantize_weights(net, 4, overrides={"0": {"bits": 8}, "8": {"skip": True}})
    assert report["0"].bits == 8 and "8" in report.skipped
    assert torch.equal(q[8].weight, net[8].weight)
    with pytest.raises(ValueError, match=r"unknown layer 'nope'.*'0', '3', '8'"):
        quantize_weights(net, 4, overrides={"nope": {"bits": 8}})
    with pytest.raises(ValueError, match="unknown keys"):
        quantize_weights(net, 4, overrides={"0": {"bitz": 8}})


def test_per_channel_symmetric_report_and_table() -> None:
    _, report = quantize_weights(_net(), 4, per_channel=True, symmetric=True, space="uniform")
    table = report.table()
    assert "alpha" in table and "3" in table and "layers" in table
    assert all(0 < x.alpha <= 1 for x in report.layers)


def test_fold_bn_preserves_float_function() -> None:
    net = _net()
    x = torch.randn(5, 3, 8, 8)
    folded = _net()
    pairs = fold_bn_(folded)
    assert pairs == [("0", "1"), ("3", "4")]
    torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    assert isinstance(folded[1], nn.Identity) and folded[3].bias is not None


def test_fold_bn_option_in_quantize_weights() -> None:
    net = _net()
    q, report = quantize_weights(net, 8, fold_bn=True, space="uniform")
    assert report.folded_bn == conv_bn_pairs(net)
    x = torch.randn(4, 3, 8, 8)
    assert torch.allclose(q(x), net(x), atol=0.05)  # 8-bit folded model tracks the float one


def test_nan_weights_name_the_layer() -> None:
    net = _net()
    with torch.no_grad():
        net[3].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="layer '3' has NaN/Inf"):
        quantize_weights(net, 4)


def test_model_without_layers_and_bad_args() -> None:
    with pytest.raises(ValueError, match="no Conv/ConvTranspose/Linear"):
        quantize_weights(nn.Sequential(nn.ReLU()), 4)
    with pytest.raises(ValueError, match="bits"):
        quantize_weights(_net(), 12)
    with pytest.raises(ValueError, match="space"):
        quantize_weights(_net(), 4, space="log")


def test_conv_transpose_uses_axis_one() -> None:
    net = nn.Sequential(nn.ConvTranspose2d(4, 6, 3), nn.ConvTranspose2d(6, 2, 3), nn.Conv2d(2, 2, 1))
    q, _ = quantize_weights(net, 4, per_channel=True, space="uniform")
    w = net[1].weight.detach()
    est = estimate_range(w, 4, per_channel=True, ch_axis=1)
    assert est.alpha.shape == (2,)  # weight is (in, out, kh, kw): out channels on axis 1
    torch.testing.assert_close(q[1].weight.detach(), est.fake_quantize(w))


def test_channels_last_model_and_data_give_the_same_network() -> None:
    # beyond on a channels_last model with channels_last calibration data: the layout is kept, the user's model
    # untouched, and the network is the contiguous run's up to float rounding (conv sums in another order can
    # flip a few codes downstream): as close to the float network, and far closer to the contiguous run
    cal, x = random_batches(0), random_batches(5)[0]
    ref, _ = quantize_weights(make_depthwise_net(0), 4, recipe="beyond", calibration_data=cal)
    m = make_depthwise_net(0).to(memory_format=torch.channels_last)
    before = [p.detach().clone() for p in m.parameters()]
    q, _ = quantize_weights(m, 4, recipe="beyond", calibration_data=[b.to(memory_format=torch.channels_last)
                                                                      for b in cal])
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in q.parameters() if p.dim() == 4)
    with torch.no_grad():
        y_float, y_q = make_depthwise_net(0)(x), q(x.to(memory_format=torch.channels_last))
        gap, quant_err = (y_q - ref(x)).abs().max(), (ref(x) - y_float).abs().max()
        err = (y_q - y_float).abs().max()
    assert gap < 0.5 * quant_err and err < 1.5 * quant_err, (gap, err, quant_err)


def test_auto_rows_take_every_row_of_narrow_layers_and_subsample_wide_ones() -> None:
    torch.manual_seed(0)  # layer "2": n = 64 * 9 = 576 -> 32,768 rows; "4": n = 128 * 9 = 1,152 -> 8,192 rows
    net = nn.Sequential(nn.Conv2d(3, 64, 1), nn.ReLU(), nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(128, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    data = [torch.randn(8, 3, 32, 32) for _ in range(2)]  # 16,384 rows per conv layer
    opts = dict(objective="output", rounding="feedback", bias_correction="none", space="uniform")
    auto = quantize_weights(net, 4, calibration_data=data, **opts)[0]
    every = quantize_weights(net, 4, calibration_data=data, calibration_rows=None, **opts)[0]
    fewer = quantize_weights(net, 4, calibration_data=data, calibration_rows=8192, **opts)[0]
    assert torch.equal(auto.get_submodule("2").weight, every.get_submodule("2").weight)
    assert not torch.equal(fewer.get_submodule("2").weight, every.get_submodule("2").weight)
    assert not torch.equal(auto.get_submodule("4").weight, every.get_submodule("4").weight)
