"""``inputs="quantized"``: each layer is matched to the float layer's output from the partly
quantized model's inputs, which compensates the upstream error at low bit widths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from requant_plugin import quantize_weights


def model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                   nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)]
    m = nn.Sequential(*layers)
    with torch.no_grad():  # non-trivial BN statistics
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def data(seed: int, batches: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 3, 12, 12, generator=g) for _ in range(batches)]


def output_error(ref: nn.Module, q: nn.Module, xs: list[torch.Tensor]) -> float:
    with torch.no_grad():
        return float(sum(((ref(x) - q(x)) ** 2).mean() for x in xs) / len(xs))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantized_inputs_lower_the_network_output_error_at_2_bits(seed: int) -> None:
    m, cal, held_out = model(seed), data(seed), data(seed + 100)
    before = [p.detach().clone() for p in m.parameters()]
    err = {}
    for inputs in ("float", "quantized"):
        q, rep = quantize_weights(m, 2, recipe="beyond", calibration_data=cal, inputs=inputs)
        assert rep.settings["inputs"] == inputs
        err[inputs] = output_error(m, q, held_out)
    assert err["quantized"] < err["float"], err
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))  # user's model untouched


def test_quantized_inputs_need_data() -> None:
    with pytest.raises(ValueError, match="inputs='quantized'"):
        quantize_weights(model(0), 4, recipe="paper", inputs="quantized")


def test_unknown_inputs_value_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"valid values are \['float', 'quantized'\]"):
        quantize_weights(model(0), 4, recipe="beyond", calibration_data=data(0), inputs="fake")
