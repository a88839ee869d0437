"""Fashion-MNIST (28x28 grey, 10 classes) from the IDX files of Debian's ``dataset-fashion-mnist``.

Location, in order of precedence: the ``root`` argument, ``$REQUANT_FASHION_MNIST_DIR``, then the
files installed by the Debian package (the usual ``/usr/share`` folders, or ``dpkg -L``).
Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .arrays import ArrayDataset, as_labels, normalise, stratified_subset

__all__ = [
    "FASHION_MNIST_DIR_ENV", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "fashion_mnist_available",
    "find_fashion_mnist_dir", "load_fashion_mnist", "read_idx",
]

FASHION_MNIST_DIR_ENV = "REQUANT_FASHION_MNIST_DIR"
FASHION_MNIST_MEAN: tuple[float, ...] = (0.2860,)
FASHION_MNIST_STD: tuple[float, ...] = (0.3530,)

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
    x_tr, y_tr = stratified_subset(arrays["x_train"], arrays["y_train"], train_limit, seed)
    x_te, y_te = stratified_subset(arrays["x_test"], arrays["y_test"], test_limit, seed)
    mean, std = FASHION_MNIST_MEAN, FASHION_MNIST_STD
    height, width = int(x_te.shape[1]), int(x_te.shape[2])
    return ArrayDataset(
        name="fashion-mnist",
        x_train=normalise(x_tr[:, None], mean, std, 255.0),
        y_train=as_labels(y_tr),
        x_test=normalise(x_te[:, None], mean, std, 255.0),
        y_test=as_labels(y_te),
        num_classes=10,
        input_shape=(1, height, width),
        mean=mean,
        std=std,
    )
