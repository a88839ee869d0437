"""``--fresh`` recomputes the cells a run reads and leaves every other cached cell of that sample alone
(``--only fx --fresh`` once wiped the cached pt2e and beyond cells of the seed it ran)."""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Any

import pytest
from torch import nn

from benchmarks.observers_accuracy import run


def test_fresh_with_only_fx_keeps_the_other_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    task = SimpleNamespace(model=nn.Identity(), calibration=[], test=[(None, [0, 1])], dataset="fake")
    monkeypatch.setattr(run, "load_task", lambda *a, **k: task)
    monkeypatch.setattr(run, "quantize_fx", lambda *a, **k: (nn.Identity(), 0.0))
    monkeypatch.setattr(run, "check_quantized", lambda q: 1)
    monkeypatch.setattr(run, "save", lambda cache: None)

    def accuracy(*a: Any) -> float:
        calls.append("eval")
        return 50.0

    monkeypatch.setattr(run, "evaluate_accuracy", accuracy)
    args = argparse.Namespace(test_limit=None, calib_batches=8, batch_size=64, seed=0, fresh=True, only="fx",
                              skip_diagnostics=True, refresh_stale=False, refresh=[])
    key = "m|test=None|calib=8x64|seed=0"
    cache: dict[str, Any] = {key: {"fp32": 1.0, "fx_w8a8_default": {"acc": 1.0}, "pt2e_w4a8_requant": {"acc": 2.0},
                                   "codes": {"pt2e_w4a8_requant": "old"}}}
    out = run.run_model("m", args, cache)
    assert out["pt2e_w4a8_requant"] == {"acc": 2.0} and out["codes"]["pt2e_w4a8_requant"] == "old"
    fx = [k for k in out if k.startswith("fx_w8a8_")]
    assert len(fx) == 7 and all(out[k]["acc"] == 50.0 for k in fx) and out["fp32"] == 50.0
    assert len(calls) == 8  # fp32 and each FX cell once
