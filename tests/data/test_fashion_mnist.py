"""load_fashion_mnist and read_idx: gzip or raw IDX files, the install hint, malformed files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from requant_plugin.data import FASHION_MNIST_DIR_ENV, fashion_mnist_available, load_fashion_mnist, read_idx


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_idx(tmp_path: Path, compress: bool, fashion_dir: Callable[..., None]) -> None:
    fashion_dir(tmp_path, compress=compress)
    data = load_fashion_mnist(tmp_path, test_limit=10)
    assert data.x_train.shape == (40, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    assert data.name == "fashion-mnist" and data.num_classes == 10
    raw = read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if compress else "")))
    expected = (torch.from_numpy(raw.copy()).float()[:, None] / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(data.x_train, expected)


def test_fashion_mnist_missing_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)
    monkeypatch.setenv(FASHION_MNIST_DIR_ENV, str(tmp_path / "none"))
    assert not fashion_mnist_available()


def test_read_idx_rejects_bad_files(tmp_path: Path, idx: Callable[[np.ndarray], bytes]) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(idx(np.zeros((4, 2, 2)))[:-3])
    with pytest.raises(ValueError, match="needs"):
        read_idx(short)
    floats = tmp_path / "floats"
    floats.write_bytes(bytes([0, 0, 0x0D, 1]) + (1).to_bytes(4, "big") + b"\x00" * 4)
    with pytest.raises(ValueError, match="unsigned-byte"):
        read_idx(floats)


@pytest.mark.skipif(not fashion_mnist_available(), reason="dataset-fashion-mnist not installed")
def test_installed_fashion_mnist() -> None:
    data = load_fashion_mnist(train_limit=1000, test_limit=500)
    assert data.x_train.shape == (1000, 1, 28, 28) and data.x_test.shape == (500, 1, 28, 28)
    assert torch.equal(torch.bincount(data.y_test), torch.full((10,), 50))
