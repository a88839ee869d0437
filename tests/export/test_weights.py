"""Weights on the INT8 grid: closed-form codes, torch's own fake quantizer, sqrt-level snapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from requant_plugin import estimate_range
from requant_plugin.export import check_tensorrt_compat, export_onnx_qdq
from requant_plugin.export.reference import fake_quant_reference
from requant_plugin.export.verify import compare_with_reference
from requant_plugin.export.weights import WeightTarget, quantize_weight


@pytest.fixture(scope="module")
def w() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((8, 6, 3, 3)) * rng.uniform(0.05, 1.0, (8, 1, 1, 1))).astype(np.float32)


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_uniform_codes_match_closed_form_and_torch(w: np.ndarray, bits: int) -> None:
    qw = quantize_weight(w, WeightTarget("l", "t", 0), bits=bits)
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    s = qw.scale.astype(np.float64)[:, None, None, None]
    np.testing.assert_array_equal(qw.q, np.clip(np.rint(w / s), qmin, qmax).astype(np.int8))
    assert qw.q.min() >= qmin and qw.q.max() <= qmax
    amax = np.abs(w).reshape(8, -1).max(1)
    assert np.all(qw.scale * (qmax) <= amax * (1 + 1e-6))  # alpha <= 1 on amax / (2^(b-1) - 1)
    assert 0 < qw.alpha <= 1
    ref = torch.fake_quantize_per_channel_affine(
        torch.from_numpy(w),
        torch.from_numpy(qw.scale.astype(np.float32)),
        torch.zeros(8, dtype=torch.int32),
        0,
        qmin,
        qmax,
    )
    np.testing.assert_array_equal(qw.dequantize(), ref.numpy())
    np.testing.assert_allclose(qw.mse, np.mean((w.astype(np.float64) - qw.q * s) ** 2), rtol=1e-12)
    assert abs(qw.snap_extra_mse) < 1e-6 * qw.mse


def test_per_tensor_scale(w: np.ndarray) -> None:
    qw = quantize_weight(w, WeightTarget("l", "t", None), bits=8)
    assert qw.scale.shape == () and qw.axis is None
    np.testing.assert_array_equal(qw.q, np.clip(np.rint(w / np.float64(qw.scale)), -128, 127))


@pytest.mark.parametrize("bits", [4, 6])
def test_sqrt_levels_snap_to_one_int8_codebook(w: np.ndarray, bits: int) -> None:
    qw = quantize_weight(w, WeightTarget("l", "t", 0), bits=bits, space="sqrt")
    half = 2 ** (bits - 1)
    k = np.arange(-half, half)
    shape = np.sign(k) * k.astype(np.float64) ** 2  # sqrt-space levels are c * sign(k) k^2
    unit = max(shape.max() / 127, -shape.min() / 128)
    book = np.rint(shape / unit).astype(np.int64)  # the same codebook in every channel
    if bits == 4:
        np.testing.assert_array_equal(book, 2 * np.sign(k) * k**2)  # exact: -128 .. 98
    # each weight keeps the level REQuant gave it (independent oracle: estimate_range itself)
    est = estimate_range(
        torch.from_numpy(w), bits, symmetric=True, per_channel=True, space="sqrt", convention="tensorrt"
    )
    idx = est.quantize(torch.from_numpy(w)).numpy() + half
    np.testing.assert_array_equal(qw.q, book[idx])
    assert qw.distinct <= 2**bits
    np.testing.assert_allclose(qw.snap_extra_mse, qw.mse - qw.fq_mse)
    if bits == 4:
        assert abs(qw.snap_extra_mse) <= 1e-6 * qw.fq_mse  # only the float32 rounding of the scale
    else:
        assert 0 < qw.snap_extra_mse < 0.5 * qw.fq_mse  # small levels move, some collapse to 0
        assert qw.distinct < 2**bits


class _Up(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.relu2(self.up(self.relu(self.conv(x)))), 1))


def test_conv_transpose_uses_axis_1(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Up().eval()
    calib = [torch.randn(16, 3, 8, 8) for _ in range(2)]
    report = export_onnx_qdq(model, calib, tmp_path / "up.onnx", weight_bits=4)
    m = onnx.load(str(report.path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    dq = next(n for n in m.graph.node if n.name == "up.weight_DequantizeLinear")
    assert next(a.i for a in dq.attribute if a.name == "axis") == 1
    assert inits["up.weight_scale"].shape == (4,) and inits["up.weight_quantized"].shape == (8, 4, 2, 2)
    assert np.abs(inits["up.weight_quantized"]).max() <= 8
    assert check_tensorrt_compat(report.path) == []
    tf = compare_with_reference(report.path, fake_quant_reference(model, report), torch.randn(8, 3, 8, 8))
    assert tf["teacher_forced"]["unexplained"] == 0


def test_sqrt_export_first_last_stay_uniform(digits: Any, tmp_path: Path) -> None:
    ds, model = digits
    report = export_onnx_qdq(
        model, ds.calibration_batches(64, 32), tmp_path / "d.onnx", weight_bits=4, space="sqrt"
    )
    spaces = {w.layer: w.space for w in report.weights}
    assert spaces == {"conv1": "uniform", "conv2": "sqrt", "linear": "uniform"}
    assert report.weight("conv2").distinct_int8 <= 16
    tf = compare_with_reference(report.path, fake_quant_reference(model, report), ds.x_test[:64])
    assert tf["teacher_forced"]["unexplained"] == 0
