"""Cached benchmark results, and the digest of the library sources they were computed with.

``code_digest()`` hashes EVERY ``.py`` file of the ``requant_plugin`` package, in sorted order of
their paths relative to the package, path and contents both: editing, adding, removing or moving
any file changes it. Results recorded with another digest are *stale*: benchmarks report them
(``stale_warning``) instead of reusing them silently, and recompute them when asked.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.harness.paths import PACKAGE


def package_files(package: Path = PACKAGE) -> list[Path]:
    """Every ``.py`` file under ``package``, sorted by its POSIX path relative to ``package``."""
    if not package.is_dir():
        raise FileNotFoundError(f"code_digest: no package folder at {package}")
    files = sorted(package.rglob("*.py"), key=lambda f: f.relative_to(package).as_posix())
    if not files:
        raise FileNotFoundError(f"code_digest: no .py file under {package}")
    return files


def code_digest(package: Path = PACKAGE, length: int = 10) -> str:
    """sha1 over (relative path, NUL, contents, NUL) of every package file, first ``length`` hex digits."""
    h = hashlib.sha1()
    for f in package_files(package):
        h.update(f.relative_to(package).as_posix().encode())
        h.update(b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:length]


def stale_warning(codes: Iterable[str | None], current: str, what: str,
                  hint: str = "rerun with --refresh-stale (or --fresh) to recompute them") -> str | None:
    """A one-line warning when some cached ``what`` were computed with another code digest
    (``None``: recorded before digests were kept), else ``None``; ``hint`` says how to recompute."""
    counts: dict[str, int] = {}
    for c in codes:
        if c != current:
            key = "no digest" if c is None else str(c)
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return None
    detail = ", ".join(f"{n} with {c}" for c, n in sorted(counts.items()))
    return (f"WARNING: {sum(counts.values())} cached {what} were computed with other library sources "
            f"({detail}; now {current}); they are reused as they are, {hint}")


class ResultCache:
    """A JSON file of finished configurations, so reruns and interrupted runs resume.

    Keys are canonical JSON strings of the configuration dicts; values are result dicts.
    Each ``put`` rewrites the file atomically, merged with what other runs wrote since.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = self._read()

    @staticmethod
    def key(config: dict[str, Any]) -> str:
        """The canonical key: ``json.dumps(config, sort_keys=True)``."""
        return json.dumps(config, sort_keys=True)

    def get(self, config: dict[str, Any]) -> dict[str, Any] | None:
        return self.data.get(self.key(config))

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    def put(self, config: dict[str, Any], result: dict[str, Any]) -> None:
        """Record one result: under a lock, the file as it is now (other runs' results kept) plus this
        key, so several runs of a benchmark (one per core) can fill one cache."""
        key = self.key(config)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            data[key] = result
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        self.data = data
