"""``requant demo`` in its digits fallback mode (no shared CIFAR-10, no Fashion-MNIST)."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

import pytest

from requant_plugin.data import cifar10_available, fashion_mnist_available
from requant_plugin.demo import choose_demo_data


def _export_possible() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def test_demo_digits_fallback(cli, no_shared_data: Path, tmp_path: Path) -> None:
    report = tmp_path / "demo"
    t0 = time.perf_counter()
    status, out, err = cli("demo", "--report", str(report), "--no-progress")
    elapsed = time.perf_counter() - t0
    assert status == 0, err
    assert elapsed < 90, f"digits demo took {elapsed:.0f} s"
    assert "using scikit-learn digits" in out
    assert re.search(r"REQuant alpha\+sqrt\s+REQuant beyond$", out, re.M)  # the recipe column
    for row in ("FP32", "W8", "W6", "W4"):
        assert re.search(rf"^{row}(\s+\d+\.\d\d){{4}}$", out, re.M), row
    assert re.search(r"^conv2\s+32x16x3x3\s+sqrt\s+0\.\d{4}", out, re.M)
    assert "what happened: at W4" in out
    assert (report / "report.md").is_file() and len(list(report.glob("*.png"))) == 3
    res = json.loads((report / "results.json").read_text())
    assert res["settings"]["bits"] == [8, 6, 4] and res["settings"]["recipe"] == "beyond"
    assert set(res["accuracy"]["4"]) == {"minmax", "requant", "requant_sqrt", "recipe"}
    assert res["data"].startswith("digits")
    if _export_possible():
        onnx_path = report / "small_cnn_w8a8.onnx"
        assert onnx_path.is_file()
        assert "TensorRT rules 0 error(s)" in out
        assert res["export"]["violations"] == []
        assert abs(res["export"]["onnx_accuracy"] - res["fp32"]) <= 2.0  # W8A8 in ONNX Runtime
        status, insp, _ = cli("inspect", str(onnx_path))
        assert status == 0 and "OK, no error" in insp
    else:
        assert "export: skipped" in out and "requant-plugin[onnx]" in out


def test_demo_picks_digits_without_shared_data(no_shared_data: Path) -> None:
    assert choose_demo_data()[:2] == ("digits", "small-cnn")


def test_demo_picks_fashion_mnist_when_installed(monkeypatch, tmp_path: Path) -> None:
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST (Debian package dataset-fashion-mnist) is not installed")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("REQUANT_SHARED_DIR", str(empty))
    monkeypatch.delenv("REQUANT_CIFAR10_DIR", raising=False)
    monkeypatch.delenv("REQUANT_MODELS_DIR", raising=False)
    assert choose_demo_data()[:2] == ("fashion-mnist", "small-cnn")


def test_demo_picks_shared_resnet20() -> None:
    if not cifar10_available():
        pytest.skip("shared CIFAR-10 not found (set REQUANT_SHARED_DIR)")
    data, model, why = choose_demo_data()
    assert (data, model) == ("cifar10", "resnet20")
    assert "cifar10_resnet20.pt" in why
