"""``benchmarks.accuracy_table.run``: cached REQuant rows of other library sources are reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.accuracy_table import CODE, Config


def test_stale_rows_are_reported_not_silently_reused(tmp_path: Path, fake_runner: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    runner = fake_runner(tmp_path, {})
    cfg_old, cfg_new, peer = Config("resnet20", "requant", 4), Config("resnet20", "requant_sqrt", 4), \
        Config("resnet20", "minmax", 4)
    runner.cache.put(cfg_old.key(10, "ort"), {"acc": 80.0, "code": "0123456789"})
    runner.cache.put(cfg_new.key(10, "ort"), {"acc": 81.0, "code": CODE})
    runner.cache.put(peer.key(10, "ort"), {"acc": 79.0, "code": None})
    assert runner.stale(cfg_old) and not runner.stale(cfg_new) and not runner.stale(peer)
    runner.run([cfg_old, cfg_new, peer])  # everything cached: nothing evaluated
    out = capsys.readouterr().out
    assert "3 configurations, 0 to evaluate" in out
    assert "WARNING: 1 cached REQuant/PTQ results" in out and "0123456789" in out and f"now {CODE}" in out
    runner.cache.put(cfg_old.key(10, "ort"), {"acc": 80.0, "code": CODE})
    runner.run([cfg_old, cfg_new, peer])
    assert "WARNING" not in capsys.readouterr().out
