"""CIFAR-10 from npz shards: ``test.npz`` and ``train_*.npz`` holding uint8 NHWC ``x`` and int ``y``.

Location, in order of precedence: the ``root`` argument, ``$REQUANT_CIFAR10_DIR``, then
``<shared>/data/cifar10`` where ``<shared>`` comes from :func:`~.shared.find_shared_dir`.
Nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .arrays import ArrayDataset, as_labels, normalise, stratified_subset
from .shared import SHARED_DIR_ENV, find_shared_dir

__all__ = ["CIFAR10_DIR_ENV", "CIFAR10_MEAN", "CIFAR10_STD", "cifar10_available", "load_cifar10"]

CIFAR10_DIR_ENV = "REQUANT_CIFAR10_DIR"
CIFAR10_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
CIFAR10_STD: tuple[float, ...] = (0.229, 0.224, 0.225)


def _cifar_dir(root: str | Path | None) -> Path | None:
    """Resolve the CIFAR-10 folder from the argument, the env var or the shared folder."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(CIFAR10_DIR_ENV)
    if env:
        return Path(env).expanduser()
    shared = find_shared_dir()
    return None if shared is None else shared / "data" / "cifar10"


def cifar10_available(root: str | Path | None = None) -> bool:
    """True when a CIFAR-10 ``test.npz`` can be found (nothing is loaded)."""
    folder = _cifar_dir(root)
    return folder is not None and (folder / "test.npz").is_file()


def _read_npz(path: Path) -> tuple[npt.NDArray[np.uint8], npt.NDArray[Any]]:
    """Read ``x`` (uint8 NHWC) and ``y`` from an npz without allowing pickles."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"cannot read {path} as an npz archive of plain arrays: {exc}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, expected an npz with 'x' and 'y'")
    with loaded as data:
        if "x" not in data or "y" not in data:
            raise ValueError(f"{path} must hold arrays 'x' and 'y', has {sorted(data.files)}")
        try:
            x, y = data["x"], data["y"]
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"cannot read arrays from {path}: {exc}") from exc
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] not in (1, 3):
        raise ValueError(f"{path}: 'x' must be uint8 [N, H, W, C], got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{path}: 'y' must have shape [{len(x)}], got {y.shape}")
    return x, y


def _shard_key(path: Path) -> tuple[int, str]:
    """Sort ``train_10.npz`` after ``train_9.npz``."""
    match = re.search(r"(\d+)$", path.stem)
    return (int(match.group(1)) if match else -1, path.name)


def _train_arrays(
    folder: Path, train_limit: int | None, image_shape: tuple[int, ...]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[Any]]:
    """The train shards in order, read only until ``train_limit`` images are there (0: none)."""
    xs: list[npt.NDArray[np.uint8]] = []
    ys: list[npt.NDArray[Any]] = []
    if train_limit != 0:
        shards = sorted(folder.glob("train_*.npz"), key=_shard_key)
        if not shards:
            raise FileNotFoundError(f"no train_*.npz shards in {folder}")
        for shard in shards:
            if train_limit is not None and sum(len(y) for y in ys) >= train_limit:
                break
            x, y = _read_npz(shard)
            xs.append(x)
            ys.append(y)
    empty = np.zeros((0, *image_shape), dtype=np.uint8)
    x_train = np.concatenate(xs) if xs else empty
    y_train = np.concatenate(ys) if ys else np.zeros(0, dtype=np.int64)
    return x_train, y_train


def load_cifar10(
    root: str | Path | None = None,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """Load CIFAR-10 from ``test.npz`` and ``train_*.npz`` (uint8 NHWC ``x``, int ``y``).

    Preprocessing: ``x / 255`` then per channel ``(x - mean) / std`` with the ImageNet statistics
    the shipped ResNets expect, as NCHW float32. ``test_limit`` / ``train_limit`` keep seeded
    class-stratified subsets (the test file is sorted by class); train shards are read only
    until ``train_limit`` images are available (``train_limit=0`` reads none).
    """
    folder = _cifar_dir(root)
    if folder is None or not (folder / "test.npz").is_file():
        where = f" in {folder}" if folder is not None else ""
        raise FileNotFoundError(
            f"CIFAR-10 arrays not found{where}: expected test.npz and train_*.npz. "
            f"Pass root=<dir>, set ${CIFAR10_DIR_ENV}=<dir>, or set ${SHARED_DIR_ENV} to the "
            "shared folder that holds data/cifar10."
        )
    x_test, y_test = stratified_subset(*_read_npz(folder / "test.npz"), test_limit, seed)
    x_train, y_train = stratified_subset(*_train_arrays(folder, train_limit, x_test.shape[1:]),
                                         train_limit, seed)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"train images {x_train.shape[1:]} differ from test {x_test.shape[1:]}")
    channels = int(x_test.shape[3])
    mean = CIFAR10_MEAN if channels == 3 else CIFAR10_MEAN[:1]
    std = CIFAR10_STD if channels == 3 else CIFAR10_STD[:1]
    classes_file = folder / "classes.txt"
    if classes_file.is_file():
        num_classes = len([ln for ln in classes_file.read_text().splitlines() if ln.strip()])
    else:
        num_classes = int(max(y_test.max(initial=0), y_train.max(initial=0))) + 1
    return ArrayDataset(
        name="cifar10",
        x_train=normalise(x_train.transpose(0, 3, 1, 2), mean, std, 255.0),
        y_train=as_labels(y_train),
        x_test=normalise(x_test.transpose(0, 3, 1, 2), mean, std, 255.0),
        y_test=as_labels(y_test),
        num_classes=num_classes,
        input_shape=(channels, int(x_test.shape[1]), int(x_test.shape[2])),
        mean=mean,
        std=std,
    )
