"""Bad settings fail before any work or file; failures leave no partial file; float ops listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from requant_plugin.export import export_onnx_qdq
from requant_plugin.export.atomic import write_with_atomic
from requant_plugin.export.report import Violation


class _Untouchable:
    """Calibration data that fails the test if anything iterates it."""

    def __iter__(self) -> Any:
        raise AssertionError("calibration data was read before the settings were validated")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"symmetric": False}, "symmetric"),
        ({"act_symmetric": False}, "symmetric"),
        ({"dtype": "uint8"}, "int8"),
        ({"act_per_channel": True}, "per-channel activations"),
        ({"opset": 12}, "opset"),
        ({"opset": 21}, "opset"),
        ({"act_bits": 4}, "act_bits"),
        ({"fp16": True, "opset": 17}, "opset >= 19"),
        ({"weight_bits": 9}, "bits"),
        ({"space": "log"}, "space"),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        export_onnx_qdq(torch.nn.Linear(4, 2), _Untouchable(), tmp_path / "m.onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_and_empty_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        export_onnx_qdq(torch.nn.Linear(4, 2), _Untouchable(), tmp_path / "no" / "m.onnx")
    with pytest.raises(ValueError, match="empty"):
        export_onnx_qdq(torch.nn.Linear(4, 2), [], tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_unknown_override_and_nan_weights(digits: Any, tmp_path: Path) -> None:
    ds, model = digits
    calib = ds.calibration_batches(32, 32)
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        export_onnx_qdq(model, calib, tmp_path / "m.onnx", overrides={"nope": {"bits": 4}})
    broken = type(model)(1, 10, 8)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.conv2.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="conv2"):
        export_onnx_qdq(broken.eval(), calib, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_rule_failure_keeps_the_old_file(
    digits: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, model = digits
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    import requant_plugin.export.onnx_qdq as mod

    monkeypatch.setattr(mod, "check_tensorrt_compat", lambda m: [Violation("scale", "n", "broken")])
    with pytest.raises(ValueError, match="TensorRT rules"):
        export_onnx_qdq(model, ds.calibration_batches(32, 32), target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with_atomic(tmp_path / "x.onnx", writer)
    assert list(tmp_path.iterdir()) == []


def test_excluded_layer_stays_float_and_is_listed(digits: Any, tmp_path: Path) -> None:
    ds, model = digits
    report = export_onnx_qdq(
        model,
        ds.calibration_batches(64, 32),
        tmp_path / "m.onnx",
        exclude=["linear"],
        overrides={"conv2": {"bits": 4}},
    )
    assert [w.layer for w in report.weights] == ["conv1", "conv2"]
    assert report.weight("conv2").bits == 4
    assert ("/linear/Gemm", "Gemm", "excluded by the caller") in report.unquantized
    assert [(v.rule, v.severity) for v in report.violations] == [("float_layer", "warning")]
    sess = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": ds.x_test[:8].numpy()})[0]
    assert out.shape == (8, 10) and np.isfinite(out).all()


def test_onnx_model_input_is_accepted(digits: Any, tmp_path: Path) -> None:
    ds, model = digits
    from requant_plugin.export.torch_export import export_fp32_onnx

    proto, _, _ = export_fp32_onnx(model, ds.x_test[:1])
    report = export_onnx_qdq(proto, ds.calibration_batches(32, 32), tmp_path / "m.onnx")
    assert len(report.weights) == 3 and report.errors == []


def test_package_import_is_lazy() -> None:
    """``import requant_plugin.export`` does not import onnx/onnxruntime/tensorrt."""
    import subprocess
    import sys

    code = ("import sys, requant_plugin.export as e; "
            "assert not {'onnx', 'onnxruntime', 'tensorrt'} & set(sys.modules), sorted(sys.modules); "
            "assert callable(e.export_onnx_qdq)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_onnx_names_the_extra(tmp_path: Path) -> None:
    """Without ``onnx`` the export raises the shared MissingDependency (an ImportError) with the
    pip extra, before reading any calibration data."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "import torch\n"
        "from requant_plugin.deps import MissingDependency\n"
        "from requant_plugin.export import export_onnx_qdq\n"
        "class U:\n"
        "    def __iter__(self): raise AssertionError('data read')\n"
        "try:\n"
        f"    export_onnx_qdq(torch.nn.Linear(4, 2), U(), {str(tmp_path / 'm.onnx')!r})\n"
        "except MissingDependency as exc:\n"
        "    assert isinstance(exc, ImportError)\n"
        "    assert \"pip install 'requant-plugin[onnx]'\" in str(exc), exc\n"
        "    assert 'requant_plugin.export' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert list(tmp_path.iterdir()) == []
