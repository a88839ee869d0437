"""ONNX Q/DQ export of REQuant ranges for TensorRT (explicit INT8 quantization).

Everything here needs the ``onnx`` extra (``pip install 'requant-plugin[onnx]'``), imported
through :func:`requant_plugin.deps.require` on first use, so ``import requant_plugin.export``
itself imports no ONNX package::

    from requant_plugin.export import ExportConfig, export_onnx_qdq, check_tensorrt_compat
    report = export_onnx_qdq(model, calib_batches, "model.int8.onnx")          # W8A8 defaults
    report = export_onnx_qdq(model, calib_batches, "w4.onnx", ExportConfig(weight_bits=4))
    print(report)                                   # per-layer table, float ops, rule check
    assert not check_tensorrt_compat("model.int8.onnx")

``build_engine`` needs the ``tensorrt`` extra and a CUDA GPU.
"""

from __future__ import annotations

from .calib_cache import calibration_cache_header, read_calibration_cache, write_calibration_cache
from .config import DEFAULT_EXPORT, ExportConfig, export_config
from .engine import build_engine, run_engine, trtexec_command
from .onnx_qdq import export_onnx_qdq
from .placement import plan_qdq
from .reference import fake_quant_reference
from .report import ActivationInfo, ExportReport, Violation, WeightInfo
from .trt_rules import check_tensorrt_compat
from .verify import onnx_full_check, ort_accuracy, ort_predict, polygraphy_lint, verify_export

__all__ = [
    "DEFAULT_EXPORT",
    "ActivationInfo",
    "ExportConfig",
    "ExportReport",
    "Violation",
    "WeightInfo",
    "build_engine",
    "calibration_cache_header",
    "check_tensorrt_compat",
    "export_config",
    "export_onnx_qdq",
    "fake_quant_reference",
    "onnx_full_check",
    "ort_accuracy",
    "ort_predict",
    "plan_qdq",
    "polygraphy_lint",
    "read_calibration_cache",
    "run_engine",
    "trtexec_command",
    "verify_export",
    "write_calibration_cache",
]
