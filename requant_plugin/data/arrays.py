"""The in-memory data set every loader returns, and the helpers the loaders share.

:class:`ArrayDataset` holds normalised float32 NCHW images and int64 labels for a train and a
test split; :func:`stratified_indices` draws the seeded class-stratified subsets behind every
``limit``; :func:`normalise` is ``(x / scale - mean) / std`` per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["ArrayDataset", "as_labels", "normalise", "stratified_indices", "stratified_subset"]

IntArray = npt.NDArray[np.int64]


def stratified_indices(labels: npt.ArrayLike, limit: int, seed: int = 0) -> IntArray:
    """Seeded class-stratified subset of ``limit`` indices into ``labels``, in random order.

    Each class gets ``limit * n_class / n`` indices (largest remainders rounded up). When
    ``limit`` is at least the number of labels, every index is returned in its original order.
    """
    labels_arr = np.asarray(labels)
    total = int(labels_arr.shape[0])
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if limit >= total:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels_arr, return_counts=True)
    exact = counts * (limit / total)
    quota = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: limit - int(quota.sum())]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels_arr == cls), size=int(q), replace=False)
        for cls, q in zip(classes, quota, strict=True)
    ]
    picked = np.concatenate(chosen).astype(np.int64)
    return rng.permutation(picked)


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """An in-memory image classification data set with normalised NCHW tensors.

    ``mean`` and ``std`` are the per-channel statistics that were subtracted / divided after
    scaling the raw pixels to [0, 1]; ``input_shape`` is ``(C, H, W)``.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        """Check shapes and dtypes."""
        for split in ("train", "test"):
            x, y = self.split(split)
            if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(f"x_{split} has shape {tuple(x.shape)}, want [N, *{self.input_shape}]")
            if x.dtype != torch.float32 or y.dtype != torch.int64:
                raise ValueError(f"{split} split needs float32 images and int64 labels")
            if y.shape != (x.shape[0],):
                raise ValueError(f"y_{split} has shape {tuple(y.shape)}, want [{x.shape[0]}]")

    def split(self, split: str) -> tuple[Tensor, Tensor]:
        """Return ``(images, labels)`` for ``"train"`` or ``"test"``."""
        if split == "train":
            return self.x_train, self.y_train
        if split == "test":
            return self.x_test, self.y_test
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    def loader(
        self,
        split: str,
        batch_size: int = 256,
        shuffle: bool = False,
        limit: int | None = None,
        seed: int = 0,
    ) -> DataLoader[tuple[Tensor, ...]]:
        """A DataLoader of ``(images, labels)`` batches over one split.

        ``limit`` keeps a seeded class-stratified subset of that many images; ``shuffle`` uses
        a generator seeded with ``seed``, so the order is reproducible.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        x, y = self.split(split)
        if limit is not None and limit < len(y):
            idx = torch.from_numpy(stratified_indices(y.numpy(), limit, seed))
            x, y = x[idx], y[idx]
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator)

    def calibration_batches(self, n_images: int, batch_size: int = 32, seed: int = 0) -> list[Tensor]:
        """A seeded random subset of ``n_images`` TRAIN images, cut into batches of inputs."""
        total = len(self.y_train)
        if n_images < 1 or n_images > total:
            raise ValueError(f"n_images must be in [1, {total}] for {self.name!r}, got {n_images}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        idx = torch.from_numpy(np.random.default_rng(seed).permutation(total)[:n_images])
        images = self.x_train[idx]
        return [images[i : i + batch_size] for i in range(0, n_images, batch_size)]


def normalise(
    images: npt.NDArray[Any], mean: tuple[float, ...], std: tuple[float, ...], scale: float
) -> Tensor:
    """NCHW array -> float32 tensor ``(x / scale - mean) / std`` per channel."""
    array = np.ascontiguousarray(images)
    if not array.flags.writeable:  # e.g. np.frombuffer views; torch wants writable memory
        array = array.copy()
    out = torch.from_numpy(array).float().div_(scale)
    shape = (1, len(mean), 1, 1)
    out.sub_(torch.tensor(mean, dtype=torch.float32).view(shape))
    return out.div_(torch.tensor(std, dtype=torch.float32).view(shape))


def as_labels(labels: npt.ArrayLike) -> Tensor:
    """Labels as a contiguous int64 tensor."""
    return torch.from_numpy(np.array(labels, dtype=np.int64))


def stratified_subset(
    x: npt.NDArray[Any], y: npt.NDArray[Any], limit: int | None, seed: int
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """``(x, y)`` cut to an optional seeded stratified ``limit`` (:func:`stratified_indices`)."""
    if limit is None or limit >= len(y):
        return x, y
    idx = stratified_indices(y, limit, seed)
    return x[idx], y[idx]
