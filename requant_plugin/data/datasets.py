"""Offline dataset loaders: CIFAR-10 npz shards, scikit-learn digits and Debian's Fashion-MNIST.

Nothing here downloads. Every loader returns an :class:`ArrayDataset` holding normalised
float32 NCHW tensors and int64 labels for a train and a test split.

Locations, in order of precedence:

* CIFAR-10: the ``root`` argument, ``$REQUANT_CIFAR10_DIR``, then
  ``<shared>/data/cifar10`` where ``<shared>`` comes from :func:`find_shared_dir`.
* Fashion-MNIST: the ``root`` argument, ``$REQUANT_FASHION_MNIST_DIR``, then the files installed
  by the Debian package ``dataset-fashion-mnist`` (found in the usual ``/usr/share`` folders or
  through ``dpkg -L``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "CIFAR10_DIR_ENV",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASET_NAMES",
    "FASHION_MNIST_DIR_ENV",
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

SHARED_DIR_ENV = "REQUANT_SHARED_DIR"
CIFAR10_DIR_ENV = "REQUANT_CIFAR10_DIR"
FASHION_MNIST_DIR_ENV = "REQUANT_FASHION_MNIST_DIR"

CIFAR10_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
CIFAR10_STD: tuple[float, ...] = (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN: tuple[float, ...] = (0.2860,)
FASHION_MNIST_STD: tuple[float, ...] = (0.3530,)

DATASET_NAMES = ("cifar10", "digits", "fashion-mnist")

_FASHION_CANDIDATE_DIRS = (
    "/usr/share/datasets/fashion-mnist",
    "/usr/share/dataset-fashion-mnist",
    "/usr/share/fashion-mnist",
    "/usr/local/share/datasets/fashion-mnist",
)
_FASHION_FILES = {
    "x_train": ("train-images", 3),
    "y_train": ("train-labels", 1),
    "x_test": ("t10k-images", 3),
    "y_test": ("t10k-labels", 1),
}
_FASHION_HINT = (
    "install it with `apt-get install dataset-fashion-mnist`, or point "
    f"${FASHION_MNIST_DIR_ENV} (or root=...) at a folder holding the four *-ubyte[.gz] files"
)

IntArray = npt.NDArray[np.int64]


# --------------------------------------------------------------------------- locations


def _looks_like_shared(path: Path) -> bool:
    """True when ``path`` holds the CIFAR-10 test arrays or a ``models`` folder."""
    return (path / "data" / "cifar10" / "test.npz").is_file() or (path / "models").is_dir()


def find_shared_dir() -> Path | None:
    """Locate the ``shared`` folder that sits beside the repository.

    ``$REQUANT_SHARED_DIR`` wins when it names an existing directory. Otherwise the current
    working directory and this file's folder are walked up, looking at each level for a
    directory called ``shared`` that contains ``data/cifar10/test.npz`` or ``models/``.
    Returns ``None`` when nothing is found.
    """
    env = os.environ.get(SHARED_DIR_ENV)
    if env:
        candidate = Path(env).expanduser()
        if candidate.is_dir():
            return candidate.resolve()
    starts: list[Path] = []
    with contextlib.suppress(OSError):  # the working directory may have been removed
        starts.append(Path.cwd().resolve())
    starts.append(Path(__file__).resolve().parent)
    for start in starts:
        for level in (start, *start.parents):
            candidate = level / "shared"
            if candidate.is_dir() and _looks_like_shared(candidate):
                return candidate
    return None


# --------------------------------------------------------------------------- subsets


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


# --------------------------------------------------------------------------- container


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


def _normalise(
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


def _labels(labels: npt.ArrayLike) -> Tensor:
    """Labels as a contiguous int64 tensor."""
    return torch.from_numpy(np.array(labels, dtype=np.int64))


def _subset(
    x: npt.NDArray[Any], y: npt.NDArray[Any], limit: int | None, seed: int
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Apply an optional stratified ``limit``."""
    if limit is None or limit >= len(y):
        return x, y
    idx = stratified_indices(y, limit, seed)
    return x[idx], y[idx]


# --------------------------------------------------------------------------- CIFAR-10


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
    x_test, y_test = _subset(*_read_npz(folder / "test.npz"), test_limit, seed)
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
    empty = np.zeros((0, *x_test.shape[1:]), dtype=np.uint8)
    x_train = np.concatenate(xs) if xs else empty
    y_train = np.concatenate(ys) if ys else np.zeros(0, dtype=np.int64)
    x_train, y_train = _subset(x_train, y_train, train_limit, seed)
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
        x_train=_normalise(x_train.transpose(0, 3, 1, 2), mean, std, 255.0),
        y_train=_labels(y_train),
        x_test=_normalise(x_test.transpose(0, 3, 1, 2), mean, std, 255.0),
        y_test=_labels(y_test),
        num_classes=num_classes,
        input_shape=(channels, int(x_test.shape[1]), int(x_test.shape[2])),
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------- digits


def load_digits(
    *, train_limit: int | None = None, test_limit: int | None = None, seed: int = 0
) -> ArrayDataset:
    """scikit-learn's bundled 8x8 digits: seeded stratified 80/20 split, [0, 1] then standardised.

    The mean and standard deviation come from the train split and are stored in the result.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)[:, None, :, :] / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=seed
    )
    mean, std = (float(x_tr.mean()),), (float(x_tr.std()),)
    x_tr, y_tr = _subset(x_tr, y_tr, train_limit, seed)
    x_te, y_te = _subset(x_te, y_te, test_limit, seed)
    return ArrayDataset(
        name="digits",
        x_train=_normalise(x_tr, mean, std, 1.0),
        y_train=_labels(y_tr),
        x_test=_normalise(x_te, mean, std, 1.0),
        y_test=_labels(y_te),
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------- Fashion-MNIST


def read_idx(path: str | Path) -> npt.NDArray[np.uint8]:
    """Parse an unsigned-byte IDX file (MNIST format), gzip-compressed or raw."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: broken gzip stream: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(f"{path}: only unsigned-byte IDX data (type 0x08) is supported")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX shape {shape} needs {expected} bytes, has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _fashion_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files inside ``folder`` (gzip preferred), or ``None`` if any is missing."""
    found: dict[str, Path] = {}
    for key, (prefix, ndim) in _FASHION_FILES.items():
        matches = sorted(folder.glob(f"{prefix}?idx{ndim}-ubyte*"), key=lambda p: p.suffix != ".gz")
        if not matches:
            return None
        found[key] = matches[0]
    return found


def _dpkg_fashion_dirs() -> list[Path]:
    """Folders listed by ``dpkg -L dataset-fashion-mnist`` that hold train images."""
    dpkg = shutil.which("dpkg")
    if dpkg is None:
        return []
    try:
        listing = subprocess.run(
            [dpkg, "-L", "dataset-fashion-mnist"],
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [Path(p).parent for p in listing.split() if "train-images-idx3-ubyte" in p]


def find_fashion_mnist_dir(root: str | Path | None = None) -> Path | None:
    """Folder holding the Fashion-MNIST IDX files, or ``None`` when it cannot be found.

    An explicit ``root`` (or ``$REQUANT_FASHION_MNIST_DIR``) is the only place looked at when
    given; otherwise the usual ``/usr/share`` folders, ``dpkg -L`` and a shallow glob are tried.
    """
    explicit = root if root is not None else os.environ.get(FASHION_MNIST_DIR_ENV) or None
    if explicit is not None:
        folder = Path(explicit).expanduser()
        return folder if folder.is_dir() and _fashion_files(folder) else None
    candidates = [Path(p) for p in _FASHION_CANDIDATE_DIRS]
    candidates += _dpkg_fashion_dirs()
    for pattern in ("*/*train-images?idx3-ubyte*", "*/*/*train-images?idx3-ubyte*"):
        candidates += [p.parent for p in sorted(Path("/usr/share").glob(pattern))]
    for folder in candidates:
        if folder.is_dir() and _fashion_files(folder):
            return folder
    return None


def fashion_mnist_available(root: str | Path | None = None) -> bool:
    """True when the Fashion-MNIST IDX files can be found."""
    return find_fashion_mnist_dir(root) is not None


def load_fashion_mnist(
    root: str | Path | None = None,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """Fashion-MNIST (28x28 grey, 10 classes) from IDX files.

    Pixels are scaled to [0, 1] and normalised with mean 0.2860 and std 0.3530.
    """
    folder = find_fashion_mnist_dir(root)
    if folder is None:
        where = root if root is not None else os.environ.get(FASHION_MNIST_DIR_ENV)
        detail = f" in {where}" if where else ""
        raise FileNotFoundError(f"Fashion-MNIST IDX files not found{detail}: {_FASHION_HINT}")
    files = _fashion_files(folder)
    assert files is not None  # guaranteed by find_fashion_mnist_dir
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{folder}: inconsistent {split} IDX shapes {x.shape} / {y.shape}")
    x_tr, y_tr = _subset(arrays["x_train"], arrays["y_train"], train_limit, seed)
    x_te, y_te = _subset(arrays["x_test"], arrays["y_test"], test_limit, seed)
    mean, std = FASHION_MNIST_MEAN, FASHION_MNIST_STD
    height, width = int(x_te.shape[1]), int(x_te.shape[2])
    return ArrayDataset(
        name="fashion-mnist",
        x_train=_normalise(x_tr[:, None], mean, std, 255.0),
        y_train=_labels(y_tr),
        x_test=_normalise(x_te[:, None], mean, std, 255.0),
        y_test=_labels(y_te),
        num_classes=10,
        input_shape=(1, height, width),
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------- dispatch


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
