"""Tied weights in ``quantize_weights``: one tensor, one grid; modules that are not quantized keep
the float values (before: a tied weight was quantized again by every layer holding it, and an
embedding tied to the output layer was silently quantized)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from requant_plugin import quantize_weights


class TiedLinears(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.b(F.relu(self.a(x)))))


class TinyLM(nn.Module):
    """A token embedding tied to the output projection (as in many language models)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.mid = nn.Linear(16, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.mid(self.emb(t))))


def _model(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


@pytest.mark.parametrize("recipe", ["paper", "beyond"])
def test_weight_shared_by_two_layers_is_quantized_once(recipe: str) -> None:
    m = _model(TiedLinears)
    w = m.a.weight.detach().clone()
    data = [torch.randn(8, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    q, rep = quantize_weights(m, bits=4, recipe=recipe, calibration_data=None if recipe == "paper" else data)
    assert q.a.weight is q.b.weight
    assert "b" in rep.skipped and "'a'" in rep.skipped["b"]
    assert [x.name for x in rep.layers] == ["a", "out"]
    if recipe == "paper":  # nearest rounding on a's grid: the closed-form fake quantizer of the float weight
        torch.testing.assert_close(q.a.weight.detach(), rep["a"].estimate.fake_quantize(w), rtol=0, atol=0)
    for row in q.a.weight.detach():
        assert torch.unique(row).numel() <= 16
    assert m.a.weight is m.b.weight and torch.equal(m.a.weight, w)  # the user's model is untouched


def test_embedding_tied_to_the_output_layer_keeps_float_values() -> None:
    m = _model(TinyLM)
    w = m.emb.weight.detach().clone()
    with pytest.warns(UserWarning, match=r"'head'.*'emb.weight'.*own copy"):
        q, rep = quantize_weights(m, bits=4)
    assert q.emb.weight is not q.head.weight
    assert torch.equal(q.emb.weight, w)
    torch.testing.assert_close(q.head.weight.detach(), rep["head"].estimate.fake_quantize(w), rtol=0, atol=0)
    assert m.head.weight is m.emb.weight and torch.equal(m.emb.weight, w)


def test_a_layer_skipped_by_override_keeps_its_float_weight() -> None:
    """``b`` is skipped by the user: ``a`` quantizes its own copy, ``b`` keeps the float tensor."""
    m = _model(TiedLinears)
    w = m.a.weight.detach().clone()
    with pytest.warns(UserWarning, match="own copy"):
        q, rep = quantize_weights(m, bits=4, overrides={"b": {"skip": True}})
    assert rep.skipped["b"] == "skipped by override"
    assert torch.equal(q.b.weight, w) and not torch.equal(q.a.weight, w)
