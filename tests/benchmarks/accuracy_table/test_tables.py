"""``benchmarks.accuracy_table.tables``: best cell in bold, peer wins listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.accuracy_table.tables import grid_table, peer_wins


def test_tables_show_peer_wins(tmp_path: Path, fake_runner: Any) -> None:
    accs = {
        ("resnet20", "fp32", 32): 86.9,
        ("resnet20", "requant", 4): 83.0,
        ("resnet20", "requant_sqrt", 4): 84.0,
        ("resnet20", "aciq", 4): 84.5,
    }
    runner = fake_runner(tmp_path, accs)
    table = grid_table(runner, ("resnet20",), (4,), ("aciq", "requant", "requant_sqrt"), False, False)
    assert "**84.50**" in table and "| 84.00 |" in table.replace("**", "")
    wins = peer_wins(runner, ("resnet20",), (4,), ("aciq", "requant", "requant_sqrt"), False, False)
    assert len(wins) == 1 and "ACIQ" in wins[0]
