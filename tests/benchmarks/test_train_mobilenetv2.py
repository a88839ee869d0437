"""The MobileNetV2 training script: augmentation keeps shapes and pixels, a smoke run writes loadable weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import train_mobilenetv2 as train
from requant_plugin.data import cifar10_available
from requant_plugin.zoo import load_state_dict_file
from requant_plugin.zoo.mobilenet_cifar import mobilenetv2_x0_5


def test_augment_is_a_shifted_crop_or_its_mirror() -> None:
    x = torch.randn(16, 3, 32, 32)
    out = train.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(16):
        crops = [padded[i, :, a:a + 32, b:b + 32] for a in range(9) for b in range(9)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(2)) for c in crops)


@pytest.mark.skipif(not cifar10_available(), reason="needs the shared CIFAR-10 arrays")
def test_smoke_run_writes_weights_and_log(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    rc = train.main(["--epochs", "1", "--train-limit", "300", "--test-limit", "100", "--holdout", "50",
                     "--batch-size", "64", "--out", str(out)])
    assert rc == 0
    model = mobilenetv2_x0_5()
    model.load_state_dict(load_state_dict_file(out), strict=True)
    log = json.loads(out.with_suffix(".json").read_text())
    assert len(log["epochs"]) == 1 and 0.0 <= log["test_top1"] <= 100.0
