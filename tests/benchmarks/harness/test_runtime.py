"""``benchmarks.harness.runtime``: the command line shown with every table."""

from __future__ import annotations

from benchmarks.harness.runtime import best_time, command


def test_command_is_the_module_form() -> None:
    assert command("accuracy_table", ["--quick"]) == "python -m benchmarks.accuracy_table --quick"
    assert command("search_cost.py", []) == "python -m benchmarks.search_cost"


def test_best_time_returns_the_last_result() -> None:
    calls: list[int] = []

    def fn() -> int:
        calls.append(1)
        return len(calls)

    secs, out = best_time(fn, repeats=3)
    assert out == 3 and secs >= 0.0
