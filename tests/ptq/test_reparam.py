"""Layers whose weight is computed (weight / spectral normalisation): quantized for real, and the
user's model untouched (before: the quantized weight was written into the computed tensor and lost,
so the report listed layers whose weights never changed; and torch's ``remove_parametrizations`` on a
deep copy deletes the property from the class the user's model shares)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm, weight_norm

from requant_plugin import quantize_weights

X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
CAL = [torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()


REPARAMS: dict[str, Callable[[nn.Module], object]] = {
    "parametrizations.weight_norm": parametrizations.weight_norm,
    "parametrizations.spectral_norm": parametrizations.spectral_norm,
    "weight_norm (hook)": weight_norm,
    "spectral_norm (hook)": spectral_norm,
}


@pytest.mark.parametrize("kind", list(REPARAMS))
@pytest.mark.parametrize("recipe", ["paper", "beyond"])
def test_computed_weights_are_quantized_and_the_model_untouched(kind: str, recipe: str) -> None:
    m = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates the hook-based weight_norm
        REPARAMS[kind](m[2])
    with torch.no_grad():
        ref, w = m(X), m[2].weight.detach().clone()
    with pytest.warns(UserWarning, match=r"\['2'\] compute their weight"):
        q, rep = quantize_weights(m, bits=4, recipe=recipe, calibration_data=None if recipe == "paper" else CAL)
    qw = q[2].weight
    assert isinstance(qw, nn.Parameter)
    assert max(torch.unique(row).numel() for row in qw.detach().reshape(8, -1)) <= 16  # on a 4-bit grid
    if recipe == "paper":  # nearest rounding of the computed weight on the reported grid
        torch.testing.assert_close(qw.detach(), rep["2"].estimate.fake_quantize(w), rtol=0, atol=0)
    with torch.no_grad():  # the user's model still computes its weight, as before
        torch.testing.assert_close(m(X), ref, rtol=0, atol=0)
        torch.testing.assert_close(m[2].weight, w, rtol=0, atol=0)


class _BufferWeight(nn.Linear):
    """A frozen Linear whose weight is a buffer: stored, so quantizable."""

    def __init__(self) -> None:
        super().__init__(4, 3)
        w = self.weight.detach().clone()
        del self.weight
        self.register_buffer("weight", w)


class _PropertyWeight(nn.Linear):
    """A Linear whose weight is computed by a property: nowhere to store a quantized value."""

    def __init__(self) -> None:
        super().__init__(4, 3)
        self.raw = nn.Parameter(self._parameters.pop("weight").detach().clone())

    @property  # type: ignore[override]
    def weight(self) -> torch.Tensor:
        return self.raw * 2.0


def test_buffer_weights_quantize_and_unknown_computed_weights_are_named() -> None:
    torch.manual_seed(0)
    _, rep = quantize_weights(nn.Sequential(_BufferWeight()), bits=4)
    assert [x.name for x in rep.layers] == ["0"]
    with pytest.raises(ValueError, match=r"layer '0'.*computed.*overrides=\{'0': \{'skip': True\}\}"):
        quantize_weights(nn.Sequential(_PropertyWeight()), bits=4)
