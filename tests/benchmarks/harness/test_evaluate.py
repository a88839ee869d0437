"""``benchmarks.harness.evaluate``: the ONNX Runtime engine gives torch's top-1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.harness.data import Images
from benchmarks.harness.evaluate import Evaluator


def test_onnx_runtime_engine_agrees_with_torch() -> None:
    pytest.importorskip("onnxruntime")
    from requant_plugin.zoo import resnet20

    torch.manual_seed(0)
    model = resnet20().eval()
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    images = Images(x.numpy(), pred.astype(np.int64))  # labels = torch's own predictions
    ev = Evaluator(images, "ort", batch_size=32)
    assert ev.accuracy(model) == pytest.approx(100.0, abs=100.0 / 64 + 1e-9)
    assert ev.accuracy(model, "torch") == 100.0


def test_unknown_engine_is_refused() -> None:
    images = Images(np.zeros((1, 3, 32, 32), np.float32), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="engine must be"):
        Evaluator(images, "tensorrt")
