"""integrations/tensorrt_export.py end to end on a digits SmallCNN (CPU; engine step prints trtexec)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "integrations" / "tensorrt_export.py"


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("tensorrt_export_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_end_to_end(digits: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, model = digits
    weights = tmp_path / "cnn.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "out"
    rc = _script().main(
        [
            "--model",
            "smallcnn",
            "--weights",
            str(weights),
            "--data",
            "digits",
            "--out",
            str(out),
            "--calib-images",
            "128",
            "--eval-images",
            "200",
            "--no-lint",
            "--calibration-cache",
            "8.6.1",
            "--weight-bits",
            "6",
        ]
    )
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "smallcnn.fp32.onnx",
        "smallcnn.w6a8.cache",
        "smallcnn.w6a8.onnx",
        "smallcnn.w6a8.report.json",
    ]
    rep = json.loads((out / "smallcnn.w6a8.report.json").read_text())
    ver = rep["verification"]
    assert ver["onnx_checker"] == "ok" and ver["trt_rule_errors"] == 0
    assert ver["vs_fake_quant"]["teacher_forced"]["unexplained"] == 0
    assert abs(ver["accuracy_qdq"] - ver["accuracy_fp32"]) < 5
    assert (out / "smallcnn.w6a8.cache").read_text().startswith("TRT-8601-EntropyCalibration2\n")
    text = capsys.readouterr().out
    assert "calibration" in text or "int8 codes" in text


def test_script_bad_arguments(tmp_path: Path) -> None:
    assert _script().main(["--model", "vgg", "--out", str(tmp_path)]) == 2
    assert _script().main(["--model", "smallcnn", "--data", "digits", "--out", str(tmp_path)]) == 2


def test_script_beyond_recipe(digits: Any, tmp_path: Path) -> None:
    """--recipe beyond-tensorrt: W4 weights from quantize_weights exported as they are; the
    FP32 reference stays the float model and ORT matches the fake-quant model of the W4 one."""
    _, model = digits
    weights = tmp_path / "cnn.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "out"
    rc = _script().main(["--model", "smallcnn", "--weights", str(weights), "--data", "digits", "--out", str(out),
                         "--calib-images", "128", "--eval-images", "300", "--no-lint", "--no-engine",
                         "--weight-bits", "4", "--recipe", "beyond-tensorrt"])
    assert rc == 0
    rep = json.loads((out / "smallcnn.w4a8-beyond-tensorrt.report.json").read_text())
    assert rep["settings"]["weight_ranges"] and all(w["bits"] == 4 for w in rep["weights"])
    ver = rep["verification"]
    assert ver["vs_fake_quant"]["teacher_forced"]["unexplained"] == 0
    assert ver["accuracy_fp32"] > 90 and abs(ver["accuracy_qdq"] - ver["accuracy_fp32"]) < 3
