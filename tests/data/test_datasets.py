"""Tests for the offline dataset loaders, subsets and accuracy evaluation."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from requant_plugin.data import (
    CIFAR10_DIR_ENV,
    DATASET_NAMES,
    FASHION_MNIST_DIR_ENV,
    SHARED_DIR_ENV,
    ArrayDataset,
    cifar10_available,
    default_dataset_name,
    evaluate_accuracy,
    fashion_mnist_available,
    find_shared_dir,
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    read_idx,
    stratified_indices,
)

# --------------------------------------------------------------------------- helpers


def _write_cifar_dir(
    root: Path, *, per_class: int = 20, shards: int = 3, shard_size: int = 30, size: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """A small CIFAR-style folder: class-sorted test.npz and train_<i>.npz shards."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    y_test = np.repeat(np.arange(10), per_class).astype(np.int64)
    x_test = rng.integers(0, 256, size=(len(y_test), size, size, 3), dtype=np.uint8)
    np.savez(root / "test.npz", x=x_test, y=y_test)
    for i in range(shards):
        y = rng.permutation(np.arange(shard_size) % 10).astype(np.int64)
        x = rng.integers(0, 256, size=(shard_size, size, size, 3), dtype=np.uint8)
        np.savez(root / f"train_{i}.npz", x=x, y=y)
    return x_test, y_test


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fashion_dir(root: Path, *, compress: bool) -> None:
    rng = np.random.default_rng(2)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(40) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(20) % 10,
    }
    for name, array in arrays.items():
        data = _idx_bytes(array)
        if compress:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)


# --------------------------------------------------------------------------- subsets


def test_stratified_indices_balanced_and_seeded() -> None:
    labels = np.repeat(np.arange(10), 100)
    idx = stratified_indices(labels, 250, seed=0)
    assert len(idx) == 250 and len(set(idx.tolist())) == 250
    counts = np.bincount(labels[idx], minlength=10)
    assert counts.min() >= 25 and counts.max() <= 25
    assert np.array_equal(idx, stratified_indices(labels, 250, seed=0))
    assert not np.array_equal(idx, stratified_indices(labels, 250, seed=1))
    assert np.array_equal(stratified_indices(labels, 5000), np.arange(1000))
    with pytest.raises(ValueError):
        stratified_indices(labels, -1)


def test_stratified_indices_uneven_classes() -> None:
    labels = np.array([0] * 7 + [1] * 2 + [2])
    idx = stratified_indices(labels, 5, seed=3)
    assert len(idx) == 5
    assert np.bincount(labels[idx], minlength=3)[0] >= 3


# --------------------------------------------------------------------------- shared folder


def test_find_shared_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SHARED_DIR_ENV, str(tmp_path))
    assert find_shared_dir() == tmp_path.resolve()


def test_find_shared_dir_walks_up_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shared" / "models").mkdir(parents=True)
    work = tmp_path / "repo" / "sub"
    work.mkdir(parents=True)
    monkeypatch.setenv(SHARED_DIR_ENV, str(tmp_path / "does-not-exist"))
    monkeypatch.chdir(work)
    assert find_shared_dir() == (tmp_path / "shared").resolve()


def test_find_shared_dir_ignores_unrelated_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shared").mkdir()  # neither data/cifar10/test.npz nor models/
    monkeypatch.delenv(SHARED_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_shared_dir() != (tmp_path / "shared").resolve()


# --------------------------------------------------------------------------- CIFAR-10 format


def test_load_cifar10_from_folder(tmp_path: Path) -> None:
    x_test, y_test = _write_cifar_dir(tmp_path / "c10")
    data = load_cifar10(tmp_path / "c10")
    assert data.input_shape == (3, 4, 4) and data.num_classes == 10
    assert data.x_train.shape == (90, 3, 4, 4) and data.y_train.dtype == torch.int64
    assert data.x_test.dtype == torch.float32
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    expected = (torch.from_numpy(x_test).permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert torch.equal(data.x_test, expected)
    assert torch.equal(data.y_test, torch.from_numpy(y_test))


def test_cifar_test_limit_is_stratified(tmp_path: Path) -> None:
    _write_cifar_dir(tmp_path)
    data = load_cifar10(tmp_path, test_limit=50, train_limit=0)
    assert torch.equal(torch.bincount(data.y_test, minlength=10), torch.full((10,), 5))
    assert data.x_train.shape == (0, 3, 4, 4)


def test_cifar_reads_only_needed_shards(tmp_path: Path) -> None:
    _write_cifar_dir(tmp_path, shards=3, shard_size=30)
    (tmp_path / "train_2.npz").write_bytes(b"corrupt")
    data = load_cifar10(tmp_path, train_limit=40, seed=0)
    assert len(data.y_train) == 40
    with pytest.raises(ValueError, match=r"train_2\.npz"):
        load_cifar10(tmp_path)


def test_cifar_rejects_pickled_npz(tmp_path: Path) -> None:
    _write_cifar_dir(tmp_path)
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


def test_load_dataset_dispatch(tmp_path: Path) -> None:
    _write_cifar_dir(tmp_path / "my-npz")
    data = load_dataset(tmp_path / "my-npz", train_limit=10)
    assert data.name == "my-npz" and len(data.y_train) == 10
    assert load_dataset("digits").name == "digits"
    with pytest.raises(ValueError, match="fashion-mnist"):
        load_dataset("imagenet")
    assert default_dataset_name() in DATASET_NAMES


@pytest.mark.skipif(not cifar10_available(), reason="shared CIFAR-10 arrays not found")
def test_shared_cifar10_subset() -> None:
    data = load_cifar10(train_limit=100, test_limit=1000, seed=0)
    assert data.x_test.shape == (1000, 3, 32, 32) and data.x_train.shape == (100, 3, 32, 32)
    assert torch.equal(torch.bincount(data.y_test), torch.full((10,), 100))
    assert data.mean == (0.485, 0.456, 0.406) and data.std == (0.229, 0.224, 0.225)
    assert float(data.x_test.min()) > -2.2 and float(data.x_test.max()) < 2.7


# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_standardisation() -> None:
    data = load_digits()
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_test.shape == (360, 1, 8, 8)
    assert data.num_classes == 10 and data.input_shape == (1, 8, 8)
    assert abs(float(data.x_train.mean())) < 1e-4
    assert abs(float(data.x_train.std()) - 1.0) < 1e-3
    counts = torch.bincount(data.y_test, minlength=10)
    assert int(counts.min()) >= 35
    same = load_digits()
    assert torch.equal(same.x_test, data.x_test)
    assert not torch.equal(load_digits(seed=1).y_test, data.y_test)


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_idx(tmp_path: Path, compress: bool) -> None:
    _write_fashion_dir(tmp_path, compress=compress)
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


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(_idx_bytes(np.zeros((4, 2, 2)))[:-3])
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


# --------------------------------------------------------------------------- container


def _toy(n_train: int = 30, n_test: int = 20) -> ArrayDataset:
    gen = torch.Generator().manual_seed(0)
    return ArrayDataset(
        name="toy",
        x_train=torch.randn(n_train, 1, 2, 2, generator=gen),
        y_train=torch.arange(n_train) % 3,
        x_test=torch.randn(n_test, 1, 2, 2, generator=gen),
        y_test=torch.arange(n_test) % 2,
        num_classes=3,
        input_shape=(1, 2, 2),
        mean=(0.0,),
        std=(1.0,),
    )


def test_loader_batches_limit_and_shuffle() -> None:
    data = _toy()
    batches = list(data.loader("test", batch_size=8))
    assert [len(b[0]) for b in batches] == [8, 8, 4]
    assert torch.equal(torch.cat([b[0] for b in batches]), data.x_test)
    limited = torch.cat([b[1] for b in data.loader("test", 4, limit=10)])
    assert torch.equal(torch.bincount(limited), torch.tensor([5, 5]))
    first = torch.cat([b[1] for b in data.loader("train", 7, shuffle=True, seed=5)])
    second = torch.cat([b[1] for b in data.loader("train", 7, shuffle=True, seed=5)])
    assert torch.equal(first, second)
    with pytest.raises(ValueError, match="split"):
        data.loader("val")


def test_calibration_batches_come_from_train() -> None:
    data = _toy()
    batches = data.calibration_batches(10, batch_size=4, seed=1)
    assert [len(b) for b in batches] == [4, 4, 2]
    images = torch.cat(batches)
    assert len({tuple(img.flatten().tolist()) for img in images}) == 10
    train_rows = {tuple(img.flatten().tolist()) for img in data.x_train}
    assert all(tuple(img.flatten().tolist()) in train_rows for img in images)
    again = torch.cat(data.calibration_batches(10, batch_size=4, seed=1))
    assert torch.equal(images, again)
    assert not torch.equal(images, torch.cat(data.calibration_batches(10, 4, seed=2)))
    with pytest.raises(ValueError):
        data.calibration_batches(31)


def test_array_dataset_validates() -> None:
    with pytest.raises(ValueError):
        ArrayDataset(
            name="bad",
            x_train=torch.zeros(3, 1, 2, 2),
            y_train=torch.zeros(2, dtype=torch.int64),
            x_test=torch.zeros(1, 1, 2, 2),
            y_test=torch.zeros(1, dtype=torch.int64),
            num_classes=2,
            input_shape=(1, 2, 2),
            mean=(0.0,),
            std=(1.0,),
        )


# --------------------------------------------------------------------------- evaluation


class _PredictZero(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        logits = torch.zeros(x.shape[0], 3)
        logits[:, 0] = 1.0
        return logits * self.scale


def test_evaluate_accuracy_and_mode_restored() -> None:
    data = _toy()
    model = _PredictZero().train()
    accuracy = evaluate_accuracy(model, data.loader("test", batch_size=6), progress=True)
    assert accuracy == pytest.approx(50.0)
    assert model.training
    with pytest.raises(ValueError, match="no samples"):
        evaluate_accuracy(model, [])
