"""A recipe given to the callback through ``quantize_kwargs`` is not overridden by the callback's defaults."""

from __future__ import annotations

import pytest
import torch

from requant_plugin import quantize_weights
from requant_plugin.lightning import REQuantCalibration


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).eval()


@pytest.mark.parametrize(("written", "expected_space"), [({}, "uniform"), ({"space": "sqrt"}, "sqrt")])
def test_recipe_in_quantize_kwargs_sets_the_grid(written: dict[str, str], expected_space: str) -> None:
    """``recipe="data-free"`` is per-channel uniform: the callback's own defaults (sqrt) must not
    replace it, while a ``space`` the user wrote on the callback still wins."""
    net = _net()
    cb = REQuantCalibration(mode="weights", weight_bits=4, verbose=False, progress=False,
                            quantize_kwargs={"recipe": "data-free", "input_shape": (3, 8, 8)}, **written)
    got, _ = cb._quantize_weights(_net(), None)
    ref, report = quantize_weights(net, 4, recipe="data-free", input_shape=(3, 8, 8), **written)
    assert report.settings["space"] == expected_space and report.settings["per_channel"] is True
    for a, b in zip(got.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_defaults_without_recipe_are_sqrt_per_channel() -> None:
    cb = REQuantCalibration(mode="weights", weight_bits=4, verbose=False, progress=False)
    got, _ = cb._quantize_weights(_net(), None)
    ref, _ = quantize_weights(_net(), 4, space="sqrt", per_channel=True)
    for a, b in zip(got.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)
