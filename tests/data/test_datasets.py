"""load_dataset by name or folder, the default data set, and the compatibility module's names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import requant_plugin.data as data_pkg
from requant_plugin.data import DATASET_NAMES, default_dataset_name, load_dataset


def test_load_dataset_dispatch(tmp_path: Path, cifar_dir: Callable[..., tuple[np.ndarray, np.ndarray]]) -> None:
    cifar_dir(tmp_path / "my-npz")
    data = load_dataset(tmp_path / "my-npz", train_limit=10)
    assert data.name == "my-npz" and len(data.y_train) == 10
    assert load_dataset("digits").name == "digits"
    with pytest.raises(ValueError, match="fashion-mnist"):
        load_dataset("imagenet")
    assert default_dataset_name() in DATASET_NAMES


def test_datasets_module_keeps_every_name() -> None:
    """``requant_plugin.data.datasets`` still offers everything it did before the split."""
    from requant_plugin.data import datasets

    for name in data_pkg.__all__:
        if name not in ("evaluate_accuracy", "model_device"):
            assert getattr(datasets, name) is getattr(data_pkg, name), name
    assert callable(datasets.find_shared_dir)
