"""TensorRT (<= 10.x) calibration-cache text files.

Format: a header line ``TRT-<version>-<algorithm>`` (for example ``TRT-8601-EntropyCalibration2``),
then one line per activation tensor ``<ONNX tensor name>: <8 hex digits>``, the IEEE-754 bits
of the float32 **scale** (``amax / 127``) in big-endian order (``struct.pack('!f', s).hex()``).
TensorRT skips a cache whose header does not match its version. The version number is
TensorRT's ``NV_TENSORRT_VERSION``: ``major*1000 + minor*100 + patch`` up to 8.x and
``major*10000 + minor*100 + patch`` from 9.x on. TensorRT 11 removed implicit quantization and
reads no cache; the cache serves TensorRT <= 10 implicit INT8 and ModelOpt's
``--calibration_cache_path``.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path

from .atomic import write_bytes_atomic

ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")


def trt_version_number(trt_version: str | int) -> int:
    """``"8.6.1"`` -> 8601, ``"10.3.0"`` -> 100300; an int is returned as is."""
    if isinstance(trt_version, bool):
        raise TypeError("trt_version must be a version string like '10.3.0' or an int")
    if isinstance(trt_version, int):
        if trt_version <= 0:
            raise ValueError(f"trt_version must be positive, got {trt_version}")
        return trt_version
    m = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)*\s*", str(trt_version))
    if not m:
        raise ValueError(f"trt_version {trt_version!r} is not a version like '8.6.1' or '10.3.0'")
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if major >= 11:
        raise ValueError(
            f"TensorRT {trt_version} reads no calibration cache (implicit quantization was removed in 11.0); "
            "use the Q/DQ ONNX instead"
        )
    if minor > 99 or patch > 99:
        raise ValueError(f"trt_version {trt_version!r}: minor and patch must be < 100")
    return major * (1000 if major <= 8 else 10000) + minor * 100 + patch


def calibration_cache_header(trt_version: str | int, algorithm: str = "EntropyCalibration2") -> str:
    """The first line of a cache, e.g. ``TRT-8601-EntropyCalibration2``."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown calibration algorithm {algorithm!r}; valid: {list(ALGORITHMS)}")
    return f"TRT-{trt_version_number(trt_version)}-{algorithm}"


def scale_hex(scale: float) -> str:
    """Big-endian IEEE-754 float32 bits of ``scale`` as 8 lowercase hex digits (0.0078125 -> 3c000000)."""
    return struct.pack("!f", float(scale)).hex()


def write_calibration_cache(
    path: str | os.PathLike[str],
    scales: Mapping[str, float],
    trt_version: str | int,
    *,
    algorithm: str = "EntropyCalibration2",
) -> Path:
    """Write ``scales`` (ONNX tensor name -> float32 scale ``amax/127``) as a TensorRT cache.

    Validates everything before writing (names without newlines or ``": "`` ambiguity, finite
    positive scales that survive float32) and writes atomically. Returns the path.
    """
    header = calibration_cache_header(trt_version, algorithm)
    if not scales:
        raise ValueError("scales is empty: nothing to write")
    lines = [header]
    for name, scale in scales.items():
        if not isinstance(name, str) or not name or "\n" in name or "\r" in name:
            raise ValueError(f"invalid tensor name {name!r} for a calibration cache")
        s = float(scale)
        s32 = (
            struct.unpack("!f", struct.pack("!f", s))[0] if math.isfinite(s) and abs(s) < 3.4e38 else math.inf
        )
        if not (math.isfinite(s32) and s32 > 0):
            raise ValueError(f"scale of {name!r} must be finite and > 0 in float32, got {scale!r}")
        lines.append(f"{name}: {scale_hex(s)}")
    return write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def read_calibration_cache(path: str | os.PathLike[str]) -> tuple[str, dict[str, float]]:
    """Parse a cache: ``(header, {tensor name: scale})``."""
    text = Path(path).read_text().splitlines()
    if not text or not text[0].startswith("TRT-"):
        raise ValueError(f"{path} is not a TensorRT calibration cache (no TRT-... header)")
    scales: dict[str, float] = {}
    for k, line in enumerate(text[1:], start=2):
        if not line.strip():
            continue
        name, sep, hexval = line.rpartition(": ")
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{8}", hexval.strip()):
            raise ValueError(f"{path}:{k}: expected '<tensor>: <8 hex digits>', got {line!r}")
        scales[name] = struct.unpack("!f", bytes.fromhex(hexval.strip()))[0]
    return text[0], scales
