"""Where the offline data and models live: the ``shared`` folder beside the repository.

``$REQUANT_SHARED_DIR`` wins; otherwise the folders above the working directory and above this
package are searched for a ``shared`` folder holding ``data/cifar10/test.npz`` or ``models/``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["SHARED_DIR_ENV", "find_shared_dir"]

SHARED_DIR_ENV = "REQUANT_SHARED_DIR"


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
