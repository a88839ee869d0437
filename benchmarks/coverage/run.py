"""Run the matrix: per architecture, build the model once (seeded), its FP32 outputs, then every path
on its own deep copy; finished cells are cached (keyed by the settings, tagged with the code digest)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from benchmarks.coverage.cells import FAILURE, run_cell
from benchmarks.coverage.models import build_model, make_inputs
from benchmarks.coverage.paths import PATHS
from benchmarks.harness.cache import ResultCache, code_digest
from benchmarks.harness.runtime import progress, seed_everything


@dataclass(frozen=True)
class Settings:
    """What a cell's result depends on besides the library (the cache key, with arch and path)."""

    size: int
    batches: int = 4
    batch_size: int = 4
    test: int = 16
    seed: int = 0
    num_classes: int = 1000


def cell_key(arch: str, path: str, settings: Settings) -> dict[str, Any]:
    return {"arch": arch, "path": path, **asdict(settings)}


def _fp32(arch: str, settings: Settings) -> tuple[torch.nn.Module, Any, torch.Tensor]:
    model = build_model(arch, settings.size, settings.seed, settings.num_classes)
    inputs = make_inputs(settings.size, batches=settings.batches, batch_size=settings.batch_size,
                         test=settings.test, seed=settings.seed)
    with torch.no_grad():
        y = copy.deepcopy(model)(inputs.test)
    y = y[0] if isinstance(y, tuple | list) else y
    return model, inputs, y.float()


@dataclass
class Matrix:
    """The cells of ``archs`` x ``paths`` (``cells[(arch, path)]``) and the settings per arch."""

    archs: list[str]
    paths: list[str]
    settings: dict[str, Settings]
    cells: dict[tuple[str, str], dict[str, Any]]


def run_arch(arch: str, paths: Sequence[str], settings: Settings, cache: ResultCache, *,
             fresh: bool = False, timeout: float | None = None, cached_only: bool = False) -> dict[str, dict[str, Any]]:
    """Every path of ``paths`` on ``arch`` (cached cells reused unless ``fresh``; ``cached_only``:
    only those, the others are left out)."""
    digest = code_digest()
    out: dict[str, dict[str, Any]] = {}
    todo = [p for p in paths if fresh or cache.get(cell_key(arch, p, settings)) is None]
    for p in paths:
        if p not in todo:
            out[p] = dict(cache.get(cell_key(arch, p, settings)) or {}, cached=True)
    if not todo or cached_only:
        return out
    try:
        model, inputs, y_fp = _fp32(arch, settings)
    except Exception as exc:  # the architecture itself failed: every cell says so
        for p in todo:
            out[p] = {"status": FAILURE, "message": f"building/running FP32 {arch}: {exc}", "seconds": 0.0}
        return out
    for p in progress(todo, desc=f"{arch} ({settings.size}px)"):
        seed_everything(settings.seed)
        res = run_cell(PATHS[p], model, inputs, y_fp, seed=settings.seed, timeout=timeout)
        res["digest"] = digest
        cache.put(cell_key(arch, p, settings), res)
        out[p] = res
    return out


def run_matrix(archs: Sequence[str], paths: Sequence[str], sizes: dict[str, int], cache: ResultCache, *,
               base: Settings, fresh: bool = False, timeout: float | None = None,
               cached_only: bool = False) -> Matrix:
    """The matrix; ``sizes[arch]`` is that arch's input side, ``base`` the other settings."""
    matrix = Matrix(list(archs), list(paths), {}, {})
    for arch in archs:
        settings = replace(base, size=sizes[arch])
        matrix.settings[arch] = settings
        cells = run_arch(arch, paths, settings, cache, fresh=fresh, timeout=timeout, cached_only=cached_only)
        for p, res in cells.items():
            matrix.cells[(arch, p)] = res
    return matrix
