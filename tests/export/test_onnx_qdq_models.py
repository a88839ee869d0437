"""export_onnx_qdq and its PyTorch reference on the weight tensors a user's model can arrive with:
channels_last / inference-mode / frozen parameters, float16 / bfloat16 models and tied weights.

References: the export of the plain float32 model (initializers and scales must be identical),
ONNX Runtime (the reference must compute what ORT computes, code for code), and the user's
model before the call (it must be left untouched).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402
from refs.variants import assert_untouched, make_variant, snapshot  # noqa: E402

from requant_plugin.export import export_onnx_qdq, fake_quant_reference, verify_export  # noqa: E402
from requant_plugin.export.verify import compare_with_reference  # noqa: E402


class Block(nn.Module):
    """Conv-BN-ReLU, a residual Conv, and a Linear head (8x8 RGB input)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.conv2(h) + h)
        return self.fc(h.mean((2, 3)))


def _block() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Block()
        with torch.no_grad():
            mean, var = model.bn1.running_mean, model.bn1.running_var
            assert mean is not None and var is not None
            mean.uniform_(-0.2, 0.2)
            var.uniform_(0.5, 2.0)
        return model.eval()


def _calib(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(16, 3, 8, 8, generator=gen).to(dtype) for _ in range(2)]


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _assert_same_export(a: Any, b: Any) -> None:
    ia, ib = _initializers(a.path), _initializers(b.path)
    assert ia.keys() == ib.keys()
    for name, value in ia.items():
        assert value.dtype == ib[name].dtype, name
        np.testing.assert_array_equal(value, ib[name], err_msg=name)
    assert a.act_scales == b.act_scales


def _assert_reference_matches_ort(model: nn.Module, report: Any, x: torch.Tensor) -> None:
    res = compare_with_reference(report.path, fake_quant_reference(model, report), x)
    tf = res["teacher_forced"]
    assert tf["sites_not_in_reference"] == [] and tf["codes"] > 0
    assert tf["unexplained"] == 0 and tf["max_code_diff"] <= 1
    assert tf["outputs"]["max_abs"] < 1e-4


@pytest.fixture(scope="module")
def plain_export(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return export_onnx_qdq(_block(), _calib(), tmp_path_factory.mktemp("plain") / "plain.onnx")


def test_weight_variants_export_like_the_plain_model(
    weight_variant: str, plain_export: Any, tmp_path: Path
) -> None:
    model = make_variant(_block(), weight_variant)
    calib = _calib()
    if weight_variant == "channels_last":
        calib = [x.to(memory_format=torch.channels_last) for x in calib]
    elif weight_variant == "inference":
        with torch.inference_mode():
            calib = [x.clone().to(memory_format=torch.channels_last) for x in calib]
    before = snapshot(model)
    report = export_onnx_qdq(model, calib, tmp_path / "v.onnx")
    _assert_same_export(report, plain_export)
    _assert_reference_matches_ort(model, report, _calib()[0])
    verify_export(report, model=model, images=_calib()[0], lint=False)
    assert report.verification["vs_fake_quant"]["teacher_forced"]["unexplained"] == 0
    assert_untouched(model, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_exports_from_a_float32_copy(dtype: torch.dtype, tmp_path: Path) -> None:
    model = _block().to(dtype)
    before = snapshot(model)
    report = export_onnx_qdq(model, _calib(dtype), tmp_path / "h.onnx")
    # the reference: the same (rounded) weights given as a float32 model, float32 calibration
    expected = export_onnx_qdq(_block().to(dtype).float(), _calib(dtype), tmp_path / "f.onnx")
    _assert_same_export(report, expected)
    graph = onnx.load(str(report.path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    _assert_reference_matches_ort(model, report, _calib()[0])
    assert_untouched(model, before)


class Tied(nn.Module):
    """Two Linear layers sharing one weight Parameter; ``fc2_first`` calls the second one first."""

    def __init__(self, fc2_first: bool) -> None:
        super().__init__()
        self.fc2_first = fc2_first
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 8)
        self.fc2.weight = self.fc1.weight
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).mean((2, 3))
        first, second = (self.fc2, self.fc1) if self.fc2_first else (self.fc1, self.fc2)
        h = torch.relu(second(torch.relu(first(h)) * 3.0))
        return self.head(h)


@pytest.mark.parametrize("fc2_first", [False, True])
def test_tied_weights_reference_matches_ort(fc2_first: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Tied(fc2_first).eval()
    before = snapshot(model)
    report = export_onnx_qdq(model, _calib(), tmp_path / "tied.onnx")
    assert len(report.weights) == 4  # conv, fc1, fc2 (the shared initializer), head
    _assert_reference_matches_ort(model, report, _calib()[0])
    verify_export(report, model=model, images=_calib()[0], lint=False)
    assert report.verification["vs_fake_quant"]["teacher_forced"]["unexplained"] == 0
    assert model.fc2.weight is model.fc1.weight
    assert_untouched(model, before)


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm"])
def test_weight_normalised_layer_exports_and_verifies(kind: str, tmp_path: Path) -> None:
    """A conv whose weight is computed (``torch.nn.utils.parametrizations``): the export quantizes the
    weight inference computes, the reference matches ONNX Runtime code for code, the model keeps its
    parametrization (before: the reference could not set the layer's weight, ``KeyError``)."""
    from torch.nn.utils import parametrizations

    model = _block()
    getattr(parametrizations, kind)(model.conv2)
    x = _calib()[0]
    with torch.no_grad():
        ref = model(x)
    report = export_onnx_qdq(model, _calib(), tmp_path / "norm.onnx")
    _assert_reference_matches_ort(model, report, x)
    verify_export(report, model=model, images=x, lint=False)
    assert report.verification["vs_fake_quant"]["teacher_forced"]["unexplained"] == 0
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
    assert torch.nn.utils.parametrize.is_parametrized(model.conv2, "weight")


class FunctionalConv(nn.Module):
    """A conv weight held as a raw Parameter and applied with ``F.conv2d`` (no module)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(torch.nn.functional.conv2d(x, self.w, padding=1)).mean((2, 3)))


def test_functional_conv_exports_and_the_reference_names_the_call(tmp_path: Path) -> None:
    """The export quantizes the functional conv's weight (ONNX checks pass); the fake-quant reference,
    which models modules, refuses it naming the functional call and the ORT-only check."""
    torch.manual_seed(0)
    model = FunctionalConv().eval()
    report = export_onnx_qdq(model, _calib(), tmp_path / "functional.onnx")
    assert len(report.weights) == 2
    with pytest.raises(ValueError, match=r"not a module of the model: a functional call.*without model="):
        verify_export(report, model=model, images=_calib()[0], lint=False)
    verify_export(report, lint=False)
    assert report.verification["trt_rule_errors"] == 0


class TwoHeads(nn.Module):
    """Conv-BN-ReLU trunk with two Linear heads returned as a tuple or a dict (detection-style)."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.cls = nn.Linear(8, 5)
        self.box = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> Any:
        f = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return {"logits": self.cls(f), "boxes": self.box(f)} if self.as_dict else (self.cls(f), self.box(f))


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_multi_output_model_verifies_every_output(as_dict: bool, tmp_path: Path) -> None:
    """Before: verify_export(model=) failed with "'tuple' object has no attribute 'numpy'"; now every
    ONNX output is compared with the reference's, and a wrong head would show."""
    torch.manual_seed(0)
    model = TwoHeads(as_dict).eval()
    report = export_onnx_qdq(model, _calib(), tmp_path / "heads.onnx")
    verify_export(report, model=model, images=_calib()[0], lint=False)
    tf = report.verification["vs_fake_quant"]["teacher_forced"]
    assert tf["unexplained"] == 0 and tf["codes"] > 0 and tf["outputs"]["max_abs"] < 1e-4
    ref = fake_quant_reference(model, report)
    with torch.no_grad():
        ref.get_submodule("box.layer").weight.mul_(1.5)  # a wrong second head: the comparison must see it
    res = compare_with_reference(report.path, ref, _calib()[0])
    assert res["free_running"]["max_abs"] > 1e-2


def test_reference_with_another_output_count_is_refused(tmp_path: Path) -> None:
    """A reference returning fewer tensors than the ONNX graph's outputs is a ValueError naming both
    counts and the ORT-only check, not a silent comparison of the first output."""
    torch.manual_seed(0)
    model = TwoHeads(as_dict=False).eval()
    report = export_onnx_qdq(model, _calib(), tmp_path / "heads.onnx")
    ref = fake_quant_reference(model, report)
    with pytest.raises(ValueError, match=r"returns 1 tensors but the ONNX graph has 2 outputs.*without model="):
        compare_with_reference(report.path, lambda x: ref(x)[0], _calib()[0])
