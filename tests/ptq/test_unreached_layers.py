"""Layers the eval-mode forward never calls (training-only auxiliary heads, as Inception's ``AuxLogits``)
are quantized by the weight objective with a warning, instead of failing the calibrated recipes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from requant_plugin import estimate_range, quantize_weights


class WithAuxHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.aux = nn.Linear(8, 4)  # training only
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        out = self.head(h)
        return out + self.aux(h) if self.training else out


def model() -> nn.Module:
    torch.manual_seed(0)
    return WithAuxHead().eval()


@pytest.mark.parametrize("recipe", ["beyond", "data-free"])
def test_training_only_layer_gets_the_weight_objective_and_a_warning(recipe: str) -> None:
    m = model()
    before = m.aux.weight.detach().clone()
    cal = [torch.randn(4, 3, 8, 8) for _ in range(2)]
    data = dict(calibration_data=cal) if recipe == "beyond" else dict(input_shape=(3, 8, 8))
    with pytest.warns(UserWarning, match=r"\['aux'\] are not called by the model's eval-mode forward"):
        q, rep = quantize_weights(m, 4, recipe=recipe, **data)
    assert torch.equal(m.aux.weight, before)  # the user's model is not touched
    aux = next(layer for layer in rep.layers if layer.name == "aux")
    assert "not called by the eval forward" in aux.note
    # the weight objective: the same grid as a plain per-channel range search of that weight
    est = estimate_range(before, 4, per_channel=True, space="uniform")
    assert torch.allclose(q.aux.weight, est.fake_quantize(before), atol=1e-6)
    assert q.aux.weight.unique().numel() > 1 and not torch.equal(q.aux.weight, before)


def test_reached_layers_raise_no_warning() -> None:
    import warnings

    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        quantize_weights(m, 4, recipe="beyond", calibration_data=[torch.randn(4, 3, 8, 8)])
