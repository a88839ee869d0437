"""``benchmarks.accuracy_table.claims``: the ordering claims fail when min-max wins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.accuracy_table.claims import check_claims, claims_section, print_claims


def test_claims_fail_when_min_max_wins(tmp_path: Path, fake_runner: Any) -> None:
    good = {
        ("resnet20", "requant_sqrt", 4): 84.0,
        ("resnet20", "minmax", 4): 80.0,
        ("resnet20", "requant", 4): 83.0,
        ("resnet20", "modelopt_mse", 4): 81.0,
    }
    results = check_claims(fake_runner(tmp_path / "g", good), ("resnet20",))
    assert results and all(ok for _, ok, _ in results)
    assert print_claims(results) == 0
    bad = dict(good)
    bad[("resnet20", "minmax", 4)] = 85.0
    results = check_claims(fake_runner(tmp_path / "b", bad), ("resnet20",))
    assert not all(ok for _, ok, _ in results)
    assert print_claims(results) >= 1
    text = claims_section(results)
    assert "**FAILS**" in text and "`python -m benchmarks.accuracy_table --quick`" in text
