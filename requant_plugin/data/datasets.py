"""The offline data sets by name: ``load_dataset("cifar10" | "digits" | "fashion-mnist" | <folder>)``.

Nothing here downloads. Every loader returns an :class:`~.arrays.ArrayDataset` holding
normalised float32 NCHW tensors and int64 labels for a train and a test split. The loaders live
one per module (:mod:`.cifar10`, :mod:`.digits`, :mod:`.fashion_mnist`; the shared folder in
:mod:`.shared`, the container and subsets in :mod:`.arrays`); their names are re-exported here
so ``requant_plugin.data.datasets.<name>`` keeps working.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .arrays import ArrayDataset, stratified_indices
from .cifar10 import CIFAR10_DIR_ENV, CIFAR10_MEAN, CIFAR10_STD, cifar10_available, load_cifar10
from .digits import load_digits
from .fashion_mnist import (
    FASHION_MNIST_DIR_ENV,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    fashion_mnist_available,
    find_fashion_mnist_dir,
    load_fashion_mnist,
    read_idx,
)
from .shared import SHARED_DIR_ENV, find_shared_dir

__all__ = [
    "CIFAR10_DIR_ENV",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASET_NAMES",
    "FASHION_MNIST_DIR_ENV",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "SHARED_DIR_ENV",
    "ArrayDataset",
    "cifar10_available",
    "default_dataset",
    "default_dataset_name",
    "fashion_mnist_available",
    "find_fashion_mnist_dir",
    "find_shared_dir",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "read_idx",
    "stratified_indices",
]

DATASET_NAMES = ("cifar10", "digits", "fashion-mnist")


def load_dataset(name: str | Path, **kwargs: Any) -> ArrayDataset:
    """Load ``"cifar10"``, ``"digits"``, ``"fashion-mnist"`` or a folder of CIFAR-style npz files.

    Keyword arguments (``train_limit``, ``test_limit``, ``seed``, ``root``) go to the loader.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key in ("cifar10", "cifar-10"):
        return load_cifar10(**kwargs)
    if key == "digits":
        return load_digits(**kwargs)
    if key in ("fashion-mnist", "fashionmnist"):
        return load_fashion_mnist(**kwargs)
    folder = Path(name).expanduser()
    if folder.is_dir():
        dataset = load_cifar10(folder, **kwargs)
        return dataclasses.replace(dataset, name=folder.resolve().name or str(folder))
    raise ValueError(
        f"unknown dataset {str(name)!r}; valid values: {', '.join(map(repr, DATASET_NAMES))}, "
        "or a directory holding CIFAR-style test.npz and train_*.npz files"
    )


def default_dataset_name() -> str:
    """``"cifar10"`` if its arrays are found, else ``"fashion-mnist"`` if installed, else digits."""
    if cifar10_available():
        return "cifar10"
    if fashion_mnist_available():
        return "fashion-mnist"
    return "digits"


def default_dataset(**kwargs: Any) -> ArrayDataset:
    """Load the best data set available offline (see :func:`default_dataset_name`)."""
    return load_dataset(default_dataset_name(), **kwargs)
