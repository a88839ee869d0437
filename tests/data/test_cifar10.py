"""load_cifar10: npz shards, stratified limits, lazy shard reading, no pickles, helpful errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from requant_plugin.data import CIFAR10_DIR_ENV, cifar10_available, load_cifar10

CifarWriter = Callable[..., tuple[np.ndarray, np.ndarray]]  # the ``cifar_dir`` fixture


def test_load_cifar10_from_folder(tmp_path: Path, cifar_dir: CifarWriter) -> None:
    x_test, y_test = cifar_dir(tmp_path / "c10")
    data = load_cifar10(tmp_path / "c10")
    assert data.input_shape == (3, 4, 4) and data.num_classes == 10
    assert data.x_train.shape == (90, 3, 4, 4) and data.y_train.dtype == torch.int64
    assert data.x_test.dtype == torch.float32
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    expected = (torch.from_numpy(x_test).permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert torch.equal(data.x_test, expected)
    assert torch.equal(data.y_test, torch.from_numpy(y_test))


def test_cifar_test_limit_is_stratified(tmp_path: Path, cifar_dir: CifarWriter) -> None:
    cifar_dir(tmp_path)
    data = load_cifar10(tmp_path, test_limit=50, train_limit=0)
    assert torch.equal(torch.bincount(data.y_test, minlength=10), torch.full((10,), 5))
    assert data.x_train.shape == (0, 3, 4, 4)


def test_cifar_reads_only_needed_shards(tmp_path: Path, cifar_dir: CifarWriter) -> None:
    cifar_dir(tmp_path, shards=3, shard_size=30)
    (tmp_path / "train_2.npz").write_bytes(b"corrupt")
    data = load_cifar10(tmp_path, train_limit=40, seed=0)
    assert len(data.y_train) == 40
    with pytest.raises(ValueError, match=r"train_2\.npz"):
        load_cifar10(tmp_path)


def test_cifar_rejects_pickled_npz(tmp_path: Path, cifar_dir: CifarWriter) -> None:
    cifar_dir(tmp_path)
    np.savez(tmp_path / "test.npz", x=np.array([object()], dtype=object), y=np.zeros(1))
    with pytest.raises(ValueError):
        load_cifar10(tmp_path, train_limit=0)


def test_cifar_missing_names_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match=CIFAR10_DIR_ENV):
        load_cifar10(tmp_path / "missing")
    monkeypatch.setenv(CIFAR10_DIR_ENV, str(tmp_path / "also-missing"))
    assert not cifar10_available()
    with pytest.raises(FileNotFoundError, match="also-missing"):
        load_cifar10()


@pytest.mark.skipif(not cifar10_available(), reason="shared CIFAR-10 arrays not found")
def test_shared_cifar10_subset() -> None:
    data = load_cifar10(train_limit=100, test_limit=1000, seed=0)
    assert data.x_test.shape == (1000, 3, 32, 32) and data.x_train.shape == (100, 3, 32, 32)
    assert torch.equal(torch.bincount(data.y_test), torch.full((10,), 100))
    assert data.mean == (0.485, 0.456, 0.406) and data.std == (0.229, 0.224, 0.225)
    assert float(data.x_test.min()) > -2.2 and float(data.x_test.max()) < 2.7
