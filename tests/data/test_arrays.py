"""ArrayDataset (validation, loaders, calibration batches) and the seeded stratified subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from requant_plugin.data import ArrayDataset, stratified_indices

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


# --------------------------------------------------------------------------- container


def test_loader_batches_limit_and_shuffle(toy: ArrayDataset) -> None:
    data = toy
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


def test_calibration_batches_come_from_train(toy: ArrayDataset) -> None:
    data = toy
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
