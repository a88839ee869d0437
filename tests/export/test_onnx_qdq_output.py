"""export_onnx_qdq's output files get the permissions a plain ``open`` would give them, and
``exclude`` refuses names that are no layer of the model (as ``overrides`` does).

References: ``0o666 & ~umask`` for a new file (what ``open(path, "wb")`` creates), the existing
file's mode when one is replaced, and the model's own layer names.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("onnx")

from requant_plugin.export import export_onnx_qdq, write_calibration_cache
from requant_plugin.export.atomic import write_bytes_atomic


def _net() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()


def _calib() -> list[torch.Tensor]:
    return [torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))]


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    os.umask(old)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _plain_open_mode(path: Path) -> int:
    with open(path, "wb"):
        pass
    mode = _mode(path)
    path.unlink()
    return mode


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077], ids=oct)
def test_new_files_get_the_umask_mode(umask: None, mask: int, tmp_path: Path) -> None:
    os.umask(mask)
    expected = _plain_open_mode(tmp_path / "probe")
    assert expected == 0o666 & ~mask
    report = export_onnx_qdq(_net(), _calib(), tmp_path / "m.onnx", fp32_path=tmp_path / "m.fp32.onnx")
    assert _mode(report.path) == expected
    assert _mode(tmp_path / "m.fp32.onnx") == expected
    cache = write_calibration_cache(tmp_path / "m.cache", report.act_scales, "10.3.0")
    assert _mode(Path(cache)) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.cache", "m.fp32.onnx", "m.onnx"]


def test_replacing_a_file_keeps_its_mode(umask: None, tmp_path: Path) -> None:
    os.umask(0o077)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    out.chmod(0o644)
    export_onnx_qdq(_net(), _calib(), out)
    assert _mode(out) == 0o644 and out.stat().st_size > 3
    out.chmod(0o640)
    write_bytes_atomic(out, b"new")
    assert _mode(out) == 0o640 and out.read_bytes() == b"new"


def test_unknown_exclude_names_raise(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    msg = r"exclude names an unknown layer 'typo'; quantizable layers are: \['0', '3'\]"
    with pytest.raises(ValueError, match=msg):
        export_onnx_qdq(_net(), _calib(), out, exclude=["typo"])
    with pytest.raises(TypeError, match=r"exclude=\['3'\]"):
        export_onnx_qdq(_net(), _calib(), out, exclude="3")
    assert not out.exists()


def test_exclude_by_layer_or_node_name(tmp_path: Path) -> None:
    by_layer = export_onnx_qdq(_net(), _calib(), tmp_path / "a.onnx", exclude=["3"])
    by_node = export_onnx_qdq(_net(), _calib(), tmp_path / "b.onnx", exclude=["/3/Gemm"])
    for report in (by_layer, by_node):
        assert [w.layer for w in report.weights] == ["0"]
        assert ("/3/Gemm", "Gemm", "excluded by the caller") in report.unquantized
