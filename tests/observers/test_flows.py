"""quantize_fx / quantize_pt2e: ``refine`` takes a bool or a RefineConfig, and each result equals the
flow spelled out by hand (prepare -> refine_activation_ranges with that config -> convert)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from requant_plugin import get_requant_qconfig_mapping
from requant_plugin.observers.flows import (
    convert_pt2e_eval,
    prepare_calibrated,
    prepare_pt2e_calibrated,
    quantize_fx,
    quantize_pt2e,
)
from requant_plugin.observers.lowering import convert_fx_lowered
from requant_plugin.pt2e import get_requant_quantizer
from requant_plugin.refine import RefineConfig, refine_activation_ranges


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        y = torch.relu(self.conv2(y) + y)
        return self.fc(y.mean((2, 3)))


def _setup() -> tuple[nn.Module, list[torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 3, 8, 8, generator=g) * 2 for _ in range(4)]
    return Net().eval(), batches, torch.randn(5, 3, 8, 8, generator=g)


def test_fx_refine_config_equals_the_flow_by_hand() -> None:
    net, batches, x = _setup()
    config = RefineConfig(images=16, tol=0.05, lower=0.5)
    q, _ = quantize_fx(net, get_requant_qconfig_mapping(act_bits=4), batches, refine=config)
    prepared, _ = prepare_calibrated(net, get_requant_qconfig_mapping(act_bits=4), batches)
    factor = refine_activation_ranges(prepared, net, batches, config).factor
    ref = convert_fx_lowered(prepared)
    with torch.no_grad():
        assert torch.equal(q(x), ref(x))
    assert factor < 1.0  # so the refinement must reach the converted model
    plain, _ = quantize_fx(net, get_requant_qconfig_mapping(act_bits=4), batches)
    with torch.no_grad():
        assert not torch.equal(plain(x), q(x))


def test_fx_refine_true_is_the_default_config() -> None:
    net, batches, x = _setup()
    a, _ = quantize_fx(net, get_requant_qconfig_mapping(act_bits=4), batches, refine=True)
    b, _ = quantize_fx(net, get_requant_qconfig_mapping(act_bits=4), batches, refine=RefineConfig())
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_pt2e_refine_config_equals_the_flow_by_hand() -> None:
    net, batches, x = _setup()
    config = RefineConfig(images=16, tol=0.05, lower=0.5, layer_factors=(0.8, 1.1), layer_batches=1)
    q, _ = quantize_pt2e(net, get_requant_quantizer(8, 4), batches, refine=config)
    prepared, _ = prepare_pt2e_calibrated(net, get_requant_quantizer(8, 4), batches)
    refine_activation_ranges(prepared, net, batches, config, flow="pt2e")
    ref = convert_pt2e_eval(prepared)
    assert torch.equal(q(x), ref(x))


@pytest.mark.parametrize("bad", ["yes", {"tol": 0.05}, 1])
def test_refine_must_be_a_bool_or_a_config(bad: object) -> None:
    net, batches, _ = _setup()
    with pytest.raises(TypeError, match="RefineConfig"):
        quantize_fx(net, get_requant_qconfig_mapping(), batches, refine=bad)  # type: ignore[arg-type]
