"""Fixtures for the ``requant`` command-line tests: a trained digits SmallCNN and a CLI runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from requant_plugin.cli import main
from requant_plugin.data import load_digits
from requant_plugin.zoo import SmallCNN, train_small_cnn

CliResult = tuple[int, str, str]


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SmallCNN]:
    """A SmallCNN trained for 4 epochs on digits, and its state_dict file."""
    data = load_digits()
    model = train_small_cnn(data.x_train, data.y_train, epochs=4, seed=1)
    path = tmp_path_factory.mktemp("weights") / "digits_cnn.pt"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``requant`` in-process: ``cli("quantize", "--data", "digits")`` -> (status, out, err)."""

    def run(*argv: str) -> CliResult:
        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse errors and --help
            status = int(exc.code or 0)
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


@pytest.fixture
def no_shared_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide the shared CIFAR-10/models folder and Fashion-MNIST: the digits fallback is all there is."""
    empty = tmp_path / "empty_shared"
    empty.mkdir()
    monkeypatch.setenv("REQUANT_SHARED_DIR", str(empty))
    monkeypatch.setenv("REQUANT_FASHION_MNIST_DIR", str(empty))
    monkeypatch.delenv("REQUANT_CIFAR10_DIR", raising=False)
    monkeypatch.delenv("REQUANT_MODELS_DIR", raising=False)
    return empty
