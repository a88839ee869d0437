"""ONNX Q/DQ export of a ``quantize_weights`` result (``weight_ranges=report``): the beyond mode
(output objective, error-feedback codes, bias correction) on TensorRT's symmetric grid reaches
the exported graph code for code, and ONNX Runtime runs it like the PyTorch fake-quant model.

References: the quantized torch model's own weights (the codes must be theirs and codes *
scales reproduce them to float32 rounding), the export's fake-quant reference model under
ONNX Runtime, and the errors for settings TensorRT cannot express.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from requant_plugin import quantize_weights  # noqa: E402
from requant_plugin.export import export_onnx_qdq, fake_quant_reference  # noqa: E402
from requant_plugin.export.verify import compare_with_reference  # noqa: E402


@pytest.fixture(scope="module")
def beyond(setup: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, torch.nn.Module]:
    """ResNet-20 W4 beyond-tensorrt (BN folded) and its export with the pinned ranges."""
    model = setup.model("resnet20")
    qmodel, qrep = quantize_weights(model, 4, recipe="beyond-tensorrt", fold_bn=True,
                                    calibration_data=setup.calib)
    path = tmp_path_factory.mktemp("beyond") / "r20_w4_beyond.onnx"
    report = export_onnx_qdq(qmodel, setup.calib, path, weight_bits=4, weight_ranges=qrep)
    return report, qrep, qmodel


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_exported_weights_are_the_quantized_weights(beyond: Any) -> None:
    report, qrep, qmodel = beyond
    inits = _initializers(report.path)
    assert report.settings["weight_ranges"] == sorted(x.name for x in qrep.layers)
    checked = 0
    for info in report.weights:
        layer = qmodel.get_submodule(info.layer)
        est = qrep[info.layer].estimate
        codes, scale = inits[info.tensor + "_quantized"], inits[info.tensor + "_scale"]
        assert codes.dtype == np.int8 and codes.min() >= est.quant_min and codes.max() <= est.quant_max
        assert scale.dtype == np.float32 and not np.any(inits[info.tensor + "_zero_point"])
        w = layer.weight.detach().numpy()
        if codes.shape != w.shape:  # Gemm/MatMul may store the transpose
            codes = codes.T
        deq = codes.astype(np.float32) * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        # the same codes: the float32 products differ from the float64-scaled weights by <= 1 ulp
        np.testing.assert_array_equal(codes, np.rint(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))))
        np.testing.assert_allclose(deq, w, rtol=1.2e-7, atol=0)
        np.testing.assert_array_equal(scale, est.scale.float().numpy().reshape(-1))
        checked += 1
    assert checked == len(qrep.layers)


def test_ort_runs_the_export_like_the_fake_quant_model(beyond: Any, setup: Any) -> None:
    report, _, qmodel = beyond
    ref = fake_quant_reference(qmodel, report)
    tf = compare_with_reference(report.path, ref, setup.test_x[:32])["teacher_forced"]
    assert tf["unexplained"] == 0 and tf["max_code_diff"] <= 1
    assert tf["outputs"]["max_abs"] < 1e-4


def test_asymmetric_ranges_are_refused(setup: Any, tmp_path: Path) -> None:
    model = setup.model("resnet20")
    qmodel, qrep = quantize_weights(model, 4, recipe="beyond", fold_bn=True, calibration_data=setup.calib[:1])
    out = tmp_path / "asym.onnx"
    with pytest.raises(ValueError, match="beyond-tensorrt"):
        export_onnx_qdq(qmodel, setup.calib, out, weight_bits=4, weight_ranges=qrep)
    assert not out.exists()


def test_weights_moved_off_the_grid_are_refused(setup: Any, tmp_path: Path) -> None:
    """Quantized without folding BN: the export folds it and the weights leave the grid."""
    model = setup.model("resnet20")
    with torch.no_grad():  # random-init BatchNorms (no shared data) would fold as the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_var is not None
                m.running_var.uniform_(0.5, 2.0)
    qmodel, qrep = quantize_weights(model, 4, recipe="beyond-tensorrt", calibration_data=setup.calib[:1])
    with pytest.raises(ValueError, match="fold_bn=True"):
        export_onnx_qdq(qmodel, setup.calib, tmp_path / "off.onnx", weight_bits=4, weight_ranges=qrep)


def test_bad_weight_ranges_arguments(beyond: Any, setup: Any, tmp_path: Path) -> None:
    _, qrep, qmodel = beyond
    with pytest.raises(ValueError, match="unknown layers"):
        export_onnx_qdq(qmodel, setup.calib, tmp_path / "a.onnx", weight_ranges={"nope": qrep.layers[0].estimate})
    with pytest.raises(TypeError, match="QuantizationReport"):
        export_onnx_qdq(qmodel, setup.calib, tmp_path / "b.onnx", weight_ranges=[1, 2])
    with pytest.raises(ValueError, match="fp16"):
        export_onnx_qdq(qmodel, setup.calib, tmp_path / "c.onnx", weight_ranges=qrep, fp16=True, opset=19)
