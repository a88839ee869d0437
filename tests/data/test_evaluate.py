"""evaluate_accuracy: top-1 accuracy over a loader, the model's mode restored, empty loaders rejected."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from requant_plugin.data import ArrayDataset, evaluate_accuracy


class _PredictZero(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        logits = torch.zeros(x.shape[0], 3)
        logits[:, 0] = 1.0
        return logits * self.scale


def test_evaluate_accuracy_and_mode_restored(toy: ArrayDataset) -> None:
    data = toy
    model = _PredictZero().train()
    accuracy = evaluate_accuracy(model, data.loader("test", batch_size=6), progress=True)
    assert accuracy == pytest.approx(50.0)
    assert model.training
    with pytest.raises(ValueError, match="no samples"):
        evaluate_accuracy(model, [])
