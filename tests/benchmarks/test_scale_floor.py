"""``benchmarks.scale_floor`` end to end on the unit-test model (no tiny activations: nothing warns)."""

from __future__ import annotations

import pytest

pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")

from benchmarks.scale_floor import DEFAULT_EPS, main, measure


def test_measure_tiny_model_is_close_and_quiet() -> None:
    r = measure("tiny", "requant", DEFAULT_EPS)
    assert r["floored"] == 0 and r["error"] < 0.2 and 0 <= r["agree"] <= 100


def test_main_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--archs", "tiny", "--no-write"])
    out = capsys.readouterr().out
    assert "| tiny | REQuant |" in out and "| tiny | torchao default |" in out and "eps = 2**-12 (default)" in out
