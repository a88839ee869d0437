"""The torchvision-layout architectures of ``benchmarks.archs``: exact parameter counts, small eval
forwards, the pieces that make each family distinctive, and no torchvision import anywhere."""

from __future__ import annotations

import sys
from functools import cache

import pytest
import torch
from torch import nn

from benchmarks.archs import ARCHS, ArchInfo, build
from benchmarks.archs.convnext import LayerNorm2d
from benchmarks.archs.layers import StochasticDepth, make_divisible
from benchmarks.archs.shufflenet import channel_shuffle

NAMES = sorted(ARCHS)
VIT_TEST_SIZE = 32  # ViT is built for 32x32 inputs: 2x2 patches + class token


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@cache
def _model(name: str) -> nn.Module:
    """Each architecture built once per session (the big ones take seconds to initialize)."""
    torch.manual_seed(0)
    return build(name, image_size=VIT_TEST_SIZE if name == "vit_b_16" else None)


def _side(info: ArchInfo) -> int:
    return VIT_TEST_SIZE if info.name == "vit_b_16" else info.min_size


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_torchvision(name: str) -> None:
    info = ARCHS[name]
    n = _count(_model(name))
    if name == "vit_b_16":  # only the position embedding depends on the image size: one row per patch + 1
        assert _model(name).encoder.pos_embedding.shape == (1, (VIT_TEST_SIZE // 16) ** 2 + 1, 768)
        n += ((224 // 16) ** 2 - (VIT_TEST_SIZE // 16) ** 2) * 768
    assert n == info.params


@pytest.mark.parametrize("name", NAMES)
def test_eval_forward_at_smallest_size(name: str) -> None:
    torch.manual_seed(1)
    model = _model(name)
    assert not model.training
    side = _side(ARCHS[name])
    with torch.no_grad():
        y = model(torch.randn(2, 3, side, side))
        again = model(torch.randn(2, 3, side, side))
    assert y.shape == (2, 1000)
    assert torch.isfinite(y).all()
    assert 1e-6 < y.std() < 1e3, f"{name}: degenerate logits (std {y.std():.3g})"
    assert not torch.equal(y, again)


def test_no_torchvision_imported() -> None:
    for name in NAMES:
        _model(name)
    assert "torchvision" not in sys.modules


def test_registry() -> None:
    assert set(ARCHS) == {"resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
                          "shufflenet_v2_x0_5", "regnet_x_400mf", "densenet121", "squeezenet1_1", "inception_v3",
                          "convnext_tiny", "vit_b_16"}
    assert ARCHS["inception_v3"].input_size == 299 and ARCHS["inception_v3"].min_size == 75
    assert all(a.input_size == 224 for a in ARCHS.values() if a.name != "inception_v3")
    with pytest.raises(ValueError, match=r"valid names: .*mobilenet_v2"):
        build("mobilenet_v9")
    with pytest.raises(AttributeError):
        ARCHS["resnet18"].min_size = 1  # type: ignore[misc]


def test_num_classes_and_image_size() -> None:
    model = build("shufflenet_v2_x0_5", num_classes=10, image_size=999)  # image_size ignored by conv nets
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        build("vit_b_16", image_size=20)
    with pytest.raises(AssertionError, match="image_size 32"):  # torch._assert: the side the model was built for
        _model("vit_b_16")(torch.randn(1, 3, 64, 64))


def test_vit_uses_multihead_attention() -> None:
    vit = _model("vit_b_16")
    attn = [m for m in vit.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(attn) == 12 and attn[0].batch_first and attn[0].num_heads == 12
    assert vit.class_token.shape == (1, 1, 768)
    assert hasattr(vit.encoder.layers, "encoder_layer_11")


def test_family_structure() -> None:
    """The operations that distinguish each family are present, under torchvision's module names."""
    def kinds(name: str) -> set[type]:
        return {type(m) for m in _model(name).modules()}

    assert {nn.Hardswish, nn.Hardsigmoid} <= kinds("mobilenet_v3_small")
    assert {nn.SiLU, StochasticDepth} <= kinds("efficientnet_b0")
    assert {LayerNorm2d, nn.GELU} <= kinds("convnext_tiny")
    assert nn.ReLU6 in kinds("mobilenet_v2")
    convs = [m for m in _model("regnet_x_400mf").modules() if isinstance(m, nn.Conv2d)]
    grouped = [m for m in convs if 1 < m.groups < m.in_channels]
    assert grouped and all(m.in_channels // m.groups == 16 for m in grouped)
    keys = {n: set(_model(n).state_dict()) for n in ("densenet121", "regnet_x_400mf", "inception_v3", "convnext_tiny")}
    assert "features.denseblock4.denselayer16.conv2.weight" in keys["densenet121"]
    assert "trunk_output.block4.block4-11.f.b.0.weight" in keys["regnet_x_400mf"]
    assert "AuxLogits.fc.weight" in keys["inception_v3"] and "Mixed_7c.branch3x3dbl_3b.bn.running_var" in keys[
        "inception_v3"]
    assert "features.7.2.layer_scale" in keys["convnext_tiny"]


def test_inception_aux_head_only_in_training() -> None:
    model = _model("inception_v3")
    aux = model.AuxLogits
    assert aux is not None and _count(aux) == 3_326_696  # without it: torchvision's 23,834,568
    aux.train()
    try:
        assert aux(torch.randn(2, 768, 17, 17)).shape == (2, 1000)
    finally:
        aux.eval()


def test_stochastic_depth_is_identity_in_eval() -> None:
    sd = StochasticDepth(0.5, "row")
    x = torch.randn(64, 3)
    assert sd.eval()(x) is x
    dropped = sd.train()(x)
    rows = (dropped == 0).all(1)
    assert 0 < rows.sum() < 64
    torch.testing.assert_close(dropped[~rows], 2 * x[~rows])


def test_channel_shuffle_and_layer_norm_2d() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    ln = LayerNorm2d(4, eps=1e-6)
    y = torch.randn(2, 4, 3, 3)
    ref = nn.functional.layer_norm(y.permute(0, 2, 3, 1), (4,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(y), ref)
    assert make_divisible(72 // 4) == 24 and make_divisible(576 // 4) == 144
