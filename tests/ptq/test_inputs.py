"""Calibration inputs: accepted batch forms, clear refusals, integer ids for embedding models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from requant_plugin import quantize_weights
from requant_plugin.ptq.inputs import calibration_inputs, check_calibration_batches, iter_calibration_inputs


class _Bag(nn.Module):
    """Token ids -> mean embedding -> two Linear layers (a text classifier in miniature)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.hidden, self.head = nn.Embedding(40, 16), nn.Linear(16, 24), nn.Linear(24, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.embed(ids).mean(1))))


def test_accepted_batch_forms() -> None:
    x = torch.randn(4, 3)
    assert len(list(iter_calibration_inputs([x, [x, 1], (x,)]))) == 3
    assert len(list(iter_calibration_inputs(x))) == 1


def test_refusals_name_the_problem() -> None:
    with pytest.raises(TypeError, match="iterable of batches"):
        list(iter_calibration_inputs(3))
    with pytest.raises(TypeError, match="first"):
        list(iter_calibration_inputs([("a", 1)]))
    with pytest.raises(ValueError, match="no batch"):
        calibration_inputs([], nn.Linear(3, 3))
    with pytest.raises(TypeError, match=r"uint8.*x\.float"):
        calibration_inputs([torch.zeros(2, 3, dtype=torch.uint8)], nn.Linear(3, 3))
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        check_calibration_batches([torch.tensor([[0.0, float("inf")]])])


def test_integer_ids_are_inputs_of_embedding_models_only() -> None:
    ids = torch.randint(0, 40, (5, 7))
    assert calibration_inputs([ids], _Bag())[0] is ids
    with pytest.raises(TypeError, match="int64"):
        calibration_inputs([ids], nn.Linear(7, 2))
    with pytest.raises(TypeError, match=r"torch\.bool"):
        check_calibration_batches([ids > 3], integer_ok=True)


def test_beyond_on_an_embedding_model_quantizes_its_linear_layers() -> None:
    torch.manual_seed(0)
    model = _Bag().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [torch.randint(0, 40, (16, 7)) for _ in range(3)]
    qmodel, report = quantize_weights(model, "beyond", bits=4, calibration_data=batches)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model is untouched
    names = {r.name for r in report.layers}
    assert {"hidden", "head"} <= names
    for name in ("hidden", "head"):  # on a 4-bit grid: at most 16 values per output channel
        w = qmodel.get_submodule(name).weight.detach()
        assert max(len(torch.unique(row)) for row in w) <= 16
    with torch.no_grad():
        ref, got = model(batches[0]), qmodel(batches[0])
    assert float((got - ref).norm() / ref.norm()) < 0.2
