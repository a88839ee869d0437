"""ptq.bias_correction: plain, sequential and data-free (BatchNorm) bias correction.

References: the layers' own forward passes on the calibration data (the mean output shift
must vanish), and the closed-form mean of a rectified Gaussian for the data-free statistics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from requant_plugin import quantize_weights
from requant_plugin.ptq.bias_correction import add_to_bias_, bn_input_means, check_bias_correction


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )
    bn = net[1]
    bn.running_mean.uniform_(-0.3, 0.3)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def _layer_io(model: nn.Module, names: list[str], data: list[torch.Tensor]) -> dict[str, list]:
    """Inputs and outputs of the named layers on ``data``."""
    seen: dict[str, list] = {n: [] for n in names}
    hs = [model.get_submodule(n).register_forward_hook(
        lambda m, a, o, n=n: seen[n].append((a[0].detach(), o.detach()))) for n in names]
    with torch.no_grad():
        for x in data:
            model(x)
    for h in hs:
        h.remove()
    return seen


def _channel_mean(y: torch.Tensor) -> torch.Tensor:
    return y.transpose(0, 1).reshape(y.shape[1], -1).double().mean(dim=1)


LAYERS = ["0", "3", "7"]


def test_plain_correction_removes_mean_output_shift_of_each_layer() -> None:
    net = _net()
    data = [torch.randn(16, 3, 8, 8) for _ in range(4)]
    float_io = _layer_io(net, LAYERS, data)
    shifts = {}
    for bc in (False, "plain"):
        q, _ = quantize_weights(net, 2, space="uniform", per_channel=True, bias_correction=bc,
                                calibration_data=data)
        worst = 0.0
        for name in LAYERS:  # same float inputs through the quantized layer
            layer = q.get_submodule(name)
            with torch.no_grad():
                d = [_channel_mean(yf) - _channel_mean(layer(xf)) for xf, yf in float_io[name]]
            worst = max(worst, float(torch.stack(d).mean(dim=0).abs().max()))
        shifts[bc] = worst
    assert shifts[False] > 1e-3
    assert shifts["plain"] < 1e-5


def test_sequential_correction_matches_float_mean_outputs_through_the_model() -> None:
    net = _net(1)
    data = [torch.randn(16, 3, 8, 8) for _ in range(4)]
    q, _ = quantize_weights(net, 2, space="uniform", per_channel=True, bias_correction="sequential",
                            calibration_data=data)
    f_io, q_io = _layer_io(net, LAYERS, data), _layer_io(q, LAYERS, data)
    for name in LAYERS:  # each layer's own output mean in the quantized MODEL equals the float one
        mf = torch.stack([_channel_mean(o) for _, o in f_io[name]]).mean(dim=0)
        mq = torch.stack([_channel_mean(o) for _, o in q_io[name]]).mean(dim=0)
        torch.testing.assert_close(mq, mf, atol=1e-5, rtol=0)


def _rectified_gaussian_mean(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    z = mu / sigma
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return mu * cdf + sigma * pdf


def test_bn_means_are_rectified_gaussian_means_with_exact_padding() -> None:
    net = _net(2)
    means = bn_input_means(net, (3, 6, 6), ["3"], batches=8, batch_size=64, seed=0)["3"][0]
    bn = net[1]
    mu = _rectified_gaussian_mean(bn.bias.detach().double().numpy(), bn.weight.detach().double().abs().numpy())
    taps = means.reshape(8, 3, 3)  # (C_in, ky, kx); 3x3 conv with padding 1 on a 6x6 map
    np.testing.assert_allclose(taps[:, 1, 1], mu, atol=0.03)  # centre tap: always inside
    np.testing.assert_allclose(taps[:, 0, 0], mu * (5 / 6) ** 2, atol=0.03)  # corner: 25 of 36 positions
    np.testing.assert_allclose(taps[:, 0, 1], mu * (5 / 6), atol=0.03)


def test_bn_correction_runs_without_data_and_before_folding() -> None:
    net = _net(3)
    with pytest.raises(ValueError, match="input_shape"):
        quantize_weights(net, 3, bias_correction="bn")
    q1, _ = quantize_weights(net, 3, space="uniform", per_channel=True, bias_correction="bn", input_shape=(3, 8, 8))
    q2, rep = quantize_weights(net, 3, space="uniform", per_channel=True, bias_correction="bn", input_shape=(3, 8, 8),
                               fold_bn=True)
    assert rep.folded_bn == [("0", "1")]
    assert q1.get_submodule("3").bias is not None and q2.get_submodule("0").bias is not None
    assert all(layer.bias_shift >= 0 for layer in rep.layers)
    with pytest.raises(ValueError, match="BatchNorm"):
        bn_input_means(nn.Sequential(nn.Linear(3, 3)), (3,))


def test_add_to_bias_creates_a_bias_and_validation() -> None:
    conv = nn.Conv2d(2, 3, 1, bias=False)
    add_to_bias_(conv, np.array([1.0, 2.0, 3.0]))
    assert isinstance(conv.bias, nn.Parameter)
    torch.testing.assert_close(conv.bias.detach(), torch.tensor([1.0, 2.0, 3.0]))
    add_to_bias_(conv, np.ones(3))
    torch.testing.assert_close(conv(torch.zeros(1, 2, 1, 1)).flatten(), torch.tensor([2.0, 3.0, 4.0]))
    assert check_bias_correction(True) == "plain" and check_bias_correction(False) is None
    with pytest.raises(ValueError, match="valid values"):
        check_bias_correction("mean")
