"""Fixtures for the benchmark tests (``benchmarks`` is importable: pytest's pythonpath has the repository root)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# a runner of the accuracy tables whose cache holds given accuracies (nothing is evaluated)
FakeRunner = Callable[[Path, dict[tuple[str, str, int], float]], Any]


@pytest.fixture
def fake_runner() -> FakeRunner:
    from benchmarks.accuracy_table import Config, Runner
    from benchmarks.harness.cache import ResultCache
    from benchmarks.harness.data import Images
    from benchmarks.harness.evaluate import Evaluator

    def make(tmp_path: Path, accs: dict[tuple[str, str, int], float]) -> Runner:
        images = Images(np.zeros((10, 3, 32, 32), np.float32), np.zeros(10, np.int64))
        runner = Runner(Evaluator(images), ResultCache(tmp_path / "acc.json"))
        for (model, method, bits), acc in accs.items():
            cfg = Config(model, method, bits)
            runner.cache.put(cfg.key(images.n, "ort"), {"acc": acc})
        return runner

    return make
