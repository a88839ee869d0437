"""build_engine: a clear ImportError without TensorRT; a real build where TensorRT and a GPU exist."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from requant_plugin.export import build_engine, trtexec_command

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed: the ImportError path cannot be exercised")
def test_import_error_names_extra_and_prints_trtexec(
    r20: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ImportError) as err:
        build_engine(r20[0].path, tmp_path / "r20.plan")
    msg = str(err.value)
    assert "pip install 'requant-plugin[tensorrt]'" in msg
    assert f"trtexec --onnx={r20[0].path}" in msg and "--stronglyTyped" in msg
    assert "--minShapes=input:1x3x32x32" in msg and "--maxShapes=input:256x3x32x32" in msg
    assert "trtexec --onnx=" in capsys.readouterr().err
    assert not (tmp_path / "r20.plan").exists()


def test_trtexec_command_for_tensorrt_11(r20: Any) -> None:
    cmd = trtexec_command(r20[0].path, "e.plan", trt_major=11, opt_batch=8)
    assert "--stronglyTyped" not in cmd and "--optShapes=input:8x3x32x32" in cmd


def test_missing_onnx_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        build_engine(tmp_path / "none.onnx", tmp_path / "e.plan")


@pytest.mark.skipif(not HAS_TRT, reason="needs the tensorrt package and a CUDA GPU")
def test_engine_builds_and_matches_ort(
    r20: Any, setup: Any, tmp_path: Path
) -> None:  # pragma: no cover - GPU machines only
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from requant_plugin.export.engine import run_engine
    from requant_plugin.export.verify import ort_predict

    plan = build_engine(r20[0].path, tmp_path / "r20.plan", opt_batch=64)
    x = setup.test_x[:64].numpy()
    trt_out = run_engine(plan, x)
    ort_out = ort_predict(r20[0].path, x)
    assert np.mean(trt_out.argmax(1) == ort_out.argmax(1)) >= 0.97
