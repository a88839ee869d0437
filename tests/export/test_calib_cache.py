"""TensorRT calibration-cache text format, checked byte for byte against hand-computed files."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from requant_plugin.export import read_calibration_cache, write_calibration_cache
from requant_plugin.export.calib_cache import calibration_cache_header, scale_hex


def test_scale_hex_hand_computed() -> None:
    assert scale_hex(0.0078125) == "3c000000"  # 2**-7: exponent 120 = 0x78 -> 0 01111000 0...
    assert scale_hex(1.0) == "3f800000"
    assert scale_hex(0.5) == "3f000000"
    # NVIDIA/TensorRT#2036: "167: 3c009976" = 2**-7 * (1 + 0x009976 / 2**23)
    assert struct.unpack("!f", bytes.fromhex("3c009976"))[0] == 2**-7 * (1 + 0x009976 / 2**23)


def test_cache_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.cache"
    write_calibration_cache(path, {"input": 0.0078125, "/relu/Relu_output_0": 0.5}, "8.6.1")
    assert (
        path.read_bytes() == b"TRT-8601-EntropyCalibration2\ninput: 3c000000\n/relu/Relu_output_0: 3f000000\n"
    )


@pytest.mark.parametrize(
    ("version", "header"),
    [
        ("8.2.3", "TRT-8203-EntropyCalibration2"),
        ("10.3.0", "TRT-100300-EntropyCalibration2"),
        ("10.16.1.5", "TRT-101601-EntropyCalibration2"),
        (8501, "TRT-8501-EntropyCalibration2"),
    ],
)
def test_header_versions(version: Any, header: str) -> None:
    assert calibration_cache_header(version) == header


@pytest.mark.parametrize(
    ("scales", "version"),
    [
        ({"a": -0.1}, "10.3.0"),
        ({"a": float("nan")}, "10.3.0"),
        ({"a": 0.0}, "10.3.0"),
        ({"a": 1e-50}, "10.3.0"),  # underflows float32 to 0
        ({"a\nb": 0.1}, "10.3.0"),
        ({}, "10.3.0"),
        ({"a": 0.1}, "11.0.0"),  # TensorRT 11 reads no cache
        ({"a": 0.1}, "ten"),
    ],
)
def test_bad_input_writes_nothing(tmp_path: Path, scales: dict[str, float], version: Any) -> None:
    with pytest.raises(ValueError):
        write_calibration_cache(tmp_path / "c.cache", scales, version)
    assert list(tmp_path.iterdir()) == []


def test_roundtrip_export_scales(r20: Any, tmp_path: Path) -> None:
    report = r20[0]
    path = write_calibration_cache(tmp_path / "r20.cache", report.act_scales, "10.3.0")
    header, scales = read_calibration_cache(path)
    assert header == "TRT-100300-EntropyCalibration2"
    assert list(scales) == [a.tensor for a in report.activations]
    for name, s in report.act_scales.items():
        assert scales[name] == np.float32(s)
