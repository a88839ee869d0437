"""The CIFAR MobileNetV2: inverted residuals with depthwise 3x3 convolutions, 8x down-sampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from requant_plugin.zoo.mobilenet_cifar import MobileNetV2Cifar, mobilenetv2_x0_5


def test_width_half_structure() -> None:
    net = mobilenetv2_x0_5().eval()
    assert sum(p.numel() for p in net.parameters()) == 700_490
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [m for m in convs if m.groups > 1]
    assert len(depthwise) == 17 and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert sum(1 for m in net.modules() if isinstance(m, nn.ReLU6)) == 2 * 17 - 1 + 2
    feats = net.features(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, 1280, 4, 4)  # 32 -> 4: 8x down-sampling
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_residual_only_where_shapes_match() -> None:
    net = MobileNetV2Cifar(width=1.0)
    blocks = [m for m in net.modules() if hasattr(m, "use_residual")]
    assert len(blocks) == 17 and sum(b.use_residual for b in blocks) == 10
    with pytest.raises(ValueError, match="width"):
        MobileNetV2Cifar(width=0)
