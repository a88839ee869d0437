"""Shared fixtures for the ONNX/TensorRT export tests (small, session-scoped exports)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from requant_plugin.data import cifar10_available, load_cifar10
from requant_plugin.zoo import build_model, load_model


@dataclass
class Setup:
    """Models and images: the shared CIFAR ResNets on real images when available, else
    random-init ResNets on seeded random images."""

    real: bool
    calib: list[torch.Tensor]
    test_x: torch.Tensor
    test_y: torch.Tensor

    def model(self, name: str) -> torch.nn.Module:
        if self.real:
            return load_model(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build_model(name).eval()


@pytest.fixture(scope="session")
def setup() -> Setup:
    torch.set_num_threads(2)
    if cifar10_available():
        ds = load_cifar10(train_limit=256, test_limit=200, seed=0)
        return Setup(True, ds.calibration_batches(64, 32, seed=0), ds.x_test, ds.y_test)
    gen = torch.Generator().manual_seed(0)
    calib = [torch.randn(32, 3, 32, 32, generator=gen) for _ in range(2)]
    return Setup(False, calib, torch.randn(200, 3, 32, 32, generator=gen), torch.zeros(200, dtype=torch.long))


@pytest.fixture(scope="session")
def r20(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, torch.nn.Module, Path]:
    """ResNet-20 W8A8 export: (report, model, fp32 path)."""
    from requant_plugin.export import export_onnx_qdq

    folder = tmp_path_factory.mktemp("r20")
    model = setup.model("resnet20")
    report = export_onnx_qdq(model, setup.calib, folder / "r20.onnx", fp32_path=folder / "r20.fp32.onnx")
    return report, model, folder / "r20.fp32.onnx"


@pytest.fixture(scope="session")
def digits() -> tuple[Any, torch.nn.Module]:
    """scikit-learn digits and a SmallCNN trained on them for 3 epochs (about 2 s)."""
    from requant_plugin.data import load_digits
    from requant_plugin.zoo import train_small_cnn

    ds = load_digits()
    return ds, train_small_cnn(ds.x_train, ds.y_train, epochs=3, seed=0)
