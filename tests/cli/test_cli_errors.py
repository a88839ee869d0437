"""User errors: exit status 2 and one line on stderr naming the fix, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


def test_unknown_dataset(cli) -> None:
    status, _, err = cli("quantize", "--data", "imagenet-21k")
    assert status == 2
    line = one_line(err)
    assert line.startswith("requant quantize: error: unknown dataset 'imagenet-21k'")
    assert "'cifar10', 'digits', 'fashion-mnist'" in line


def test_missing_weights_file(cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    status, _, err = cli("quantize", "--model", "small-cnn", "--weights", str(missing), "--data", "digits")
    assert status == 2
    assert "weights file not found" in one_line(err) and str(missing) in err


def test_missing_zoo_weights(cli, no_shared_data: Path) -> None:
    status, _, err = cli("quantize", "--model", "resnet20", "--data", "digits")
    assert status == 2
    line = one_line(err)
    assert "resnet20" in line and "--weights PATH" in line


def test_corrupt_weights_file(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    status, _, err = cli("quantize", "--model", "small-cnn", "--weights", str(bad), "--data", "digits")
    assert status == 2
    assert "bad.pt" in one_line(err)


def test_missing_cifar10(cli, no_shared_data: Path) -> None:
    status, _, err = cli("quantize", "--data", "cifar10")
    assert status == 2
    line = one_line(err)
    assert "CIFAR-10 arrays not found" in line and "REQUANT_SHARED_DIR" in line


def test_missing_fashion_mnist(cli, no_shared_data: Path) -> None:
    status, _, err = cli("quantize", "--data", "fashion-mnist")
    assert status == 2
    assert "apt-get install dataset-fashion-mnist" in one_line(err)


def test_model_does_not_fit_data(cli, digits_model, tmp_path: Path) -> None:
    # a ResNet-20 (3x32x32 inputs) with random weights saved to a file, asked to run on 1x8x8 digits
    import torch

    from requant_plugin.zoo import resnet20

    path = tmp_path / "r20.pt"
    torch.save(resnet20().state_dict(), path)
    status, _, err = cli("quantize", "--model", "resnet20", "--weights", str(path), "--data", "digits")
    assert status == 2
    assert "cannot run on digits images (1x8x8)" in one_line(err)


def test_unknown_model(cli) -> None:
    status, _, err = cli("quantize", "--model", "vgg16", "--data", "digits")
    assert status == 2
    assert "unknown model 'vgg16'" in one_line(err) and "small-cnn" in err and "resnet<d>" in err


@pytest.mark.parametrize("argv, fragment", [
    (["quantize", "--bits", "9"], "bit width must be in 2..8"),
    (["quantize", "--end-bits", "1"], "argument --end-bits: bit width must be in 2..8"),
    (["quantize", "--space", "log"], "invalid choice: 'log'"),
    (["quantize", "--test-limit", "0"], "must be at least 1"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments(cli, argv: list[str], fragment: str) -> None:
    status, _, err = cli(*argv)
    assert status == 2
    line = one_line(err)
    assert fragment in line and "--help" in line


def test_missing_plots_extra_fails_fast(cli, digits_model, tmp_path: Path, monkeypatch) -> None:
    weights, _ = digits_model
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    t0 = time.perf_counter()
    status, out, err = cli("quantize", "--model", "small-cnn", "--weights", str(weights), "--data", "digits",
                           "--report", str(tmp_path / "r"))
    assert status == 2
    assert "pip install 'requant-plugin[plots]'" in one_line(err)
    assert out == "" and time.perf_counter() - t0 < 5.0  # before any work
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("module", ["onnx", "onnxruntime"])
def test_missing_onnx_extra_for_export(cli, tmp_path: Path, monkeypatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    status, _, err = cli("quantize", "--data", "digits", "--export", str(tmp_path / "m.onnx"))
    assert status == 2
    line = one_line(err)
    assert "pip install 'requant-plugin[onnx]'" in line and module in line


def test_inspect_missing_file(cli, tmp_path: Path) -> None:
    status, _, err = cli("inspect", str(tmp_path / "absent.onnx"))
    assert status == 2
    assert "ONNX file not found" in one_line(err)


def test_console_script_error_has_no_traceback() -> None:
    script = Path(sys.executable).parent / "requant"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "requant_plugin"]
    proc = subprocess.run([*cmd, "quantize", "--data", "no-such-data"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert one_line(proc.stderr).startswith("requant quantize: error: unknown dataset 'no-such-data'")
