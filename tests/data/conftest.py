"""Small on-disk data sets in the loaders' formats (CIFAR-style npz shards, Fashion-MNIST IDX files)."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from requant_plugin.data import ArrayDataset


def write_cifar_dir(
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


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` as an unsigned-byte IDX file."""
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_dir(root: Path, *, compress: bool) -> None:
    """The four Fashion-MNIST IDX files (40 train, 20 test images), gzip-compressed or raw."""
    rng = np.random.default_rng(2)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(40) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(20) % 10,
    }
    for name, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)


@pytest.fixture
def cifar_dir() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """:func:`write_cifar_dir`."""
    return write_cifar_dir


@pytest.fixture
def fashion_dir() -> Callable[..., None]:
    """:func:`write_fashion_dir`."""
    return write_fashion_dir


@pytest.fixture
def idx() -> Callable[[np.ndarray], bytes]:
    """:func:`idx_bytes`."""
    return idx_bytes


@pytest.fixture
def toy() -> ArrayDataset:
    """30 train / 20 test random 1x2x2 images; train labels ``i % 3``, test labels ``i % 2``."""
    gen = torch.Generator().manual_seed(0)
    return ArrayDataset(
        name="toy",
        x_train=torch.randn(30, 1, 2, 2, generator=gen),
        y_train=torch.arange(30) % 3,
        x_test=torch.randn(20, 1, 2, 2, generator=gen),
        y_test=torch.arange(20) % 2,
        num_classes=3,
        input_shape=(1, 2, 2),
        mean=(0.0,),
        std=(1.0,),
    )
