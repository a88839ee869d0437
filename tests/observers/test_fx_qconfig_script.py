"""integrations/fx_qconfig.py on a tiny subset (digits SmallCNN, so no shared data is needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "integrations" / "fx_qconfig.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fx_qconfig_script", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_fx_script_runs_on_a_tiny_subset(capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load()
    assert mod.main(["--model", "smallcnn", "--calib-batches", "2", "--batch-size", "16",
                     "--test-limit", "120"]) == 0
    out = capsys.readouterr().out
    acc = {}
    for label in ("FP32", "torch default x86 qconfig", "REQuant qconfig"):
        line = next(ln for ln in out.splitlines() if ln.startswith(label))
        acc[label] = float(line[len(label):].split()[0])
    assert "W8A8" in out and "lowered to x86" in out
    assert out.splitlines()[-1].split()[-1] == "3"  # conv1, conv2, linear are int8 modules
    assert acc["REQuant qconfig"] >= acc["FP32"] - 10.0  # a real int8 model of an easy task stays accurate


def test_fx_script_refuses_sub_8_bit(capsys: pytest.CaptureFixture[str]) -> None:
    assert _load().main(["--model", "smallcnn", "--bits", "4"]) == 2
    assert "pt2e_quantize.py" in capsys.readouterr().err


def test_fx_script_refine_reports_the_fitted_factor(capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load()
    assert mod.main(["--model", "smallcnn", "--calib-batches", "2", "--batch-size", "16",
                     "--test-limit", "120", "--refine"]) == 0
    cap = capsys.readouterr()
    line = next(ln for ln in cap.err.splitlines() if ln.startswith("[refine] activation range factor"))
    factor = float(line.split("factor ")[1].split(":")[0])
    before, after = (float(v) for v in line.split("output MSE ")[1].split(" (")[0].split(" -> "))
    assert 0.8 <= factor <= 1.0 and after <= before
    assert any(ln.startswith("REQuant qconfig + refined ranges") for ln in cap.out.splitlines())


def test_fx_script_re_exports_the_flow_helpers() -> None:
    """Importers of the script get the package's flow functions themselves (the tests call those)."""
    from requant_plugin.observers import flows

    mod = _load()
    for name in ("check_fx_model", "prepare_calibrated", "quantize_fx", "check_quantized", "default_mapping"):
        assert getattr(mod, name) is getattr(flows, name), name
