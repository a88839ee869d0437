"""pipeline.tables: plain-text and markdown tables."""

from __future__ import annotations

import pytest

from requant_plugin.pipeline.tables import format_table


def test_format_table_alignment() -> None:
    text = format_table(["a", "num"], [["x", "1.5"], ["long", "10.25"]], right=[False, True])
    assert text.splitlines() == ["a       num", "----  -----", "x       1.5", "long  10.25"]
    md = format_table(["a", "num"], [["x", "1.5"]], markdown=True, right=[False, True])
    assert md.splitlines() == ["| a | num |", "| - | --: |", "| x | 1.5 |"]
    with pytest.raises(ValueError, match="one cell per header"):
        format_table(["a"], [["x", "y"]])
