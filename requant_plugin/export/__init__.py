"""ONNX Q/DQ export of REQuant ranges for TensorRT (explicit INT8 quantization).

Everything here needs the ``onnx`` extra (``pip install 'requant-plugin[onnx]'``), imported on
first use, so ``import requant_plugin.export`` itself is cheap::

    from requant_plugin.export import export_onnx_qdq, check_tensorrt_compat
    report = export_onnx_qdq(model, calib_batches, "model.int8.onnx")
    print(report)                                   # per-layer table, float ops, rule check
    assert not check_tensorrt_compat("model.int8.onnx")

``build_engine`` needs the ``tensorrt`` extra and a CUDA GPU.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export_onnx_qdq": ".onnx_qdq",
    "check_tensorrt_compat": ".trt_rules",
    "write_calibration_cache": ".calib_cache",
    "read_calibration_cache": ".calib_cache",
    "calibration_cache_header": ".calib_cache",
    "build_engine": ".engine",
    "trtexec_command": ".engine",
    "run_engine": ".engine",
    "ExportReport": ".report",
    "Violation": ".report",
    "WeightInfo": ".report",
    "ActivationInfo": ".report",
    "verify_export": ".verify",
    "ort_predict": ".verify",
    "ort_accuracy": ".verify",
    "polygraphy_lint": ".verify",
    "onnx_full_check": ".verify",
    "fake_quant_reference": ".reference",
    "plan_qdq": ".placement",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'requant_plugin.export' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


__all__ = sorted(_LAZY)
