"""The torchao pt2e side on the models users bring (issue 15 items 1, 6, 8).

* weight variants (plain / channels_last / inference tensors / frozen) through the flow helper
  ``quantize_pt2e``: the same q/dq parameters as the plain model, the user's model untouched;
* ``requant_plugin.zoo``'s ResNet-18 (torchvision's BasicBlock layout, one ``relu`` module called
  twice per block) through the X86 quantizer, for REQuant's and torchao's default observers. Reference: the
  same network with a distinct ReLU module per call, quantized by torchao's stock
  ``X86InductorQuantizer`` (which handles that layout): identical converted graphs and outputs;
* options validated when the config is built; fp16/bf16 models quantize like float32.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from refs.nets import CALIB, make_net
from refs.options import INVALID_OPTIONS
from refs.variants import assert_untouched, make_variant, snapshot
from torch import nn

pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")

from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

from requant_plugin.observers.flows import quantize_pt2e
from requant_plugin.pt2e import (
    get_requant_quantization_config,
    get_requant_quantizer,
    get_torchao_default_quantization_config,
    make_quantizer,
)
from requant_plugin.zoo.resnet_imagenet import ImageNetBasicBlock, ImageNetResNet, resnet18


def _qdq_args(q: nn.Module) -> list[Any]:
    """Target and constant arguments (scales, zero points, ranges) of every q/dq node, in order."""
    rows: list[Any] = []
    for node in q.graph.nodes:
        if "quantized_decomposed" in str(node.target):
            args = []
            for a in node.args[1:]:
                if isinstance(a, torch.fx.Node) and a.op == "get_attr":
                    args.append(getattr(q, str(a.target)).tolist())
                elif not isinstance(a, torch.fx.Node):
                    args.append(a)
            rows.append((str(node.target), args))
    return rows


@pytest.mark.parametrize("backend", ["x86_inductor", "xnnpack"])
def test_pt2e_helper_accepts_every_weight_variant(weight_variant: str, backend: str) -> None:
    ref, _ = quantize_pt2e(make_net(), get_requant_quantizer(4, 8, backend=backend), CALIB)
    model = make_variant(make_net(), weight_variant)
    model.train()  # the helper must not switch the user's model to eval
    before = snapshot(model)
    q, _ = quantize_pt2e(model, get_requant_quantizer(4, 8, backend=backend), CALIB)
    assert _qdq_args(q) == _qdq_args(ref) and _qdq_args(ref)
    with torch.no_grad():
        assert torch.equal(q(CALIB[0]), ref(CALIB[0]))
    assert_untouched(model, before)
    assert model.training


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_models_quantize_like_float32(dtype: torch.dtype) -> None:
    """pt2e takes fp16/bf16 models: same q/dq structure, output within the float32 flow's error."""
    net = make_net()
    x = torch.randn(16, 3, 10, 10, generator=torch.Generator().manual_seed(9))
    q32, _ = quantize_pt2e(net, get_requant_quantizer(), CALIB)
    half = copy.deepcopy(net).to(dtype)
    q16, _ = quantize_pt2e(half, get_requant_quantizer(), [c.to(dtype) for c in CALIB])
    assert [r[0] for r in _qdq_args(q16)] == [r[0] for r in _qdq_args(q32)]
    with torch.no_grad():
        ref = net(x)
        err32 = float(((q32(x) - ref) ** 2).mean() / (ref**2).mean())
        err16 = float(((q16(x.to(dtype)).float() - ref) ** 2).mean() / (ref**2).mean())
    assert err16 < max(4 * err32, 1e-3)


# --------------------------------------------------------------------------- item 6: ResNet-18 layout


class SeparateReluBlock(ImageNetBasicBlock):
    """The zoo's (torchvision's) BasicBlock with a second ReLU module for the output activation."""

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__(cin, width, stride)
        self.relu_out = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu_out(out)  # type: ignore[no-any-return]


def _resnet18(shared_relu: bool) -> nn.Module:
    """The zoo's resnet18 narrowed to 8 channels in the first stage (fast on a CPU), 10 classes; with
    ``shared_relu=False`` the same weights with a distinct ReLU module per call."""
    torch.manual_seed(0)
    if shared_relu:
        net = resnet18(num_classes=10, base=8)
    else:
        net = ImageNetResNet(SeparateReluBlock, (2, 2, 2, 2), num_classes=10, base=8)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return net.eval()


RN_CALIB = [torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]


def _pt2e(model: nn.Module, quantizer: Any) -> nn.Module:
    exported = torch.export.export(copy.deepcopy(model), (RN_CALIB[0],))
    prepared = prepare_pt2e(exported.module(), quantizer)
    with torch.no_grad():
        for x in RN_CALIB:
            prepared(x)
    return convert_pt2e(prepared)


@pytest.mark.parametrize("observers", ["requant", "torchao_default"])
def test_x86_quantizer_runs_torchvision_resnet18_layout(observers: str) -> None:
    def config() -> Any:
        if observers == "requant":
            return get_requant_quantization_config()
        return get_torchao_default_quantization_config()

    with warnings.catch_warnings():  # the import touches torch.jit.script_method (see make_quantizer)
        warnings.filterwarnings("ignore", message=".*torch.jit.script_method.*", category=DeprecationWarning)
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    shared, distinct = _resnet18(shared_relu=True), _resnet18(shared_relu=False)
    with pytest.raises(ValueError, match="more than one output node"):  # the upstream bug, still there
        _pt2e(shared, X86InductorQuantizer().set_global(config()))
    ours = _pt2e(shared, make_quantizer(config(), "x86_inductor"))
    ref = _pt2e(distinct, X86InductorQuantizer().set_global(config()))  # torchao's own, on the same math
    assert _qdq_args(ours) == _qdq_args(ref)
    assert sum("quantize_per_tensor" in r[0] for r in _qdq_args(ours)) >= 20  # every conv/add quantized
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))  # static export: batch 4
    with torch.no_grad():
        out, ref_out, fp = ours(x), ref(x), shared(x)
    assert torch.equal(out, ref_out)
    assert float(((out - fp) ** 2).mean() / (fp**2).mean()) < 0.01
    if observers == "requant":
        q = _pt2e(shared, get_requant_quantizer())  # the factory users call
        with torch.no_grad():
            assert torch.equal(q(x), out)


def test_annotation_leaves_graph_metadata_as_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-call partitions exist only while annotating: ``source_fn_stack`` is restored."""
    quantizer = make_quantizer(get_requant_quantization_config(), "x86_inductor")
    annotate = type(quantizer).annotate
    seen: dict[str, Any] = {}

    def meta(model: torch.fx.GraphModule) -> dict[str, Any]:
        return {n.name: n.meta.get("source_fn_stack", "absent") for n in model.graph.nodes}

    def spy(self: Any, model: torch.fx.GraphModule) -> Any:
        seen["before"] = meta(model)
        out = annotate(self, model)
        seen["after"] = meta(model)
        return out

    monkeypatch.setattr(type(quantizer), "annotate", spy)
    _pt2e(_resnet18(shared_relu=True), quantizer)
    assert seen["before"] == seen["after"]
    assert "absent" in seen["before"].values()


# --------------------------------------------------------------------------- item 8: validation


@pytest.mark.parametrize(("option", "match"), INVALID_OPTIONS)
@pytest.mark.parametrize("factory", ["config", "quantizer", "xnnpack_per_tensor"])
def test_every_option_is_validated_at_construction(factory: str, option: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        if factory == "config":
            get_requant_quantization_config(**option)
        elif factory == "quantizer":
            get_requant_quantizer(**option)
        else:
            get_requant_quantization_config(backend="xnnpack", per_channel=False, **option)


def test_default_config_validates_eps() -> None:
    with pytest.raises(ValueError, match=r"eps \(the smallest scale\) must be"):
        get_torchao_default_quantization_config(eps=-1.0)
