"""Calibration inputs: accepted batch forms, clear refusals, integer ids for embedding models."""

from __future__ import annotations

import warnings

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


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(2, 3)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(z)


class _OptionalSecond(_TwoInputs):
    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return self.a(x) + (0.0 if z is None else self.b(z))


def test_a_model_needing_two_inputs_is_refused_before_calibrating() -> None:
    """The calibration runs ``model(x)``: a forward with two required inputs gets a clear error naming
    them (before: ``TypeError: forward() missing 1 required positional argument`` from deep inside)."""
    with pytest.raises(ValueError, match=r"_TwoInputs\.forward needs 2 inputs \(x, z\).*wrap the model"):
        quantize_weights(_TwoInputs(), bits=4, recipe="beyond", calibration_data=[torch.randn(8, 4)])
    with pytest.warns(UserWarning, match=r"\['b'\] are not called"):  # z is optional: b never runs
        _, rep = quantize_weights(_OptionalSecond(), bits=4, recipe="beyond", calibration_data=[torch.randn(8, 4)])
    assert [x.name for x in rep.layers] == ["a", "b"]


def test_an_uninitialised_lazy_layer_is_named() -> None:
    m = nn.Sequential(nn.LazyLinear(3))
    with pytest.raises(ValueError, match=r"layer '0' is a lazy module.*model\(x\)"):
        quantize_weights(m, bits=4)
    m(torch.randn(2, 5))  # initialised: quantizes
    _, rep = quantize_weights(m, bits=4)
    assert [x.name for x in rep.layers] == ["0"]


def test_meta_and_torchscript_models_are_refused_with_the_fix() -> None:
    """Before: a meta-device model failed with "Tensor.item() cannot be called on meta tensors", a
    scripted one with "has no Conv/ConvTranspose/Linear layer"."""
    with torch.device("meta"):
        meta = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"layer '0' has its weight on the meta device.*to_empty"):
        quantize_weights(meta, bits=4)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated in torch 2.13
        scripted = torch.jit.script(plain)
    with pytest.raises(ValueError, match=r"TorchScript module.*quantize the nn\.Module it was made from"):
        quantize_weights(scripted, bits=4)
    _, rep = quantize_weights(plain, bits=4)  # the module itself quantizes
    assert [x.name for x in rep.layers] == ["0"]
