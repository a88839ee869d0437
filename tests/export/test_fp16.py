"""fp16=True: float16 for the float layers, float32 model I/O, same predictions as float32 Q/DQ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from requant_plugin.export import check_tensorrt_compat, export_onnx_qdq
from requant_plugin.export.verify import ort_predict


def test_fp16_export(digits: Any, tmp_path: Path) -> None:
    ds, model = digits
    calib = ds.calibration_batches(128, 64)
    r32 = export_onnx_qdq(model, calib, tmp_path / "m32.onnx", opset=19)
    r16 = export_onnx_qdq(model, calib, tmp_path / "m16.onnx", opset=19, fp16=True)
    m = onnx.load(str(r16.path))
    onnx.checker.check_model(m, full_check=True)
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    scales = [t for t in m.graph.initializer if t.name.endswith("_scale")]
    assert scales and all(t.data_type == TensorProto.FLOAT16 for t in scales)
    assert not [t.name for t in m.graph.initializer if t.data_type == TensorProto.FLOAT]
    assert check_tensorrt_compat(m) == []
    x = ds.x_test.numpy()
    a, b = ort_predict(r32.path, x), ort_predict(r16.path, x)
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.97
    acc16 = np.mean(b.argmax(1) == ds.y_test.numpy())
    acc32 = np.mean(a.argmax(1) == ds.y_test.numpy())
    assert abs(acc16 - acc32) <= 0.02
