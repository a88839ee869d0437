"""ImageNet-layout ResNets: the published parameter counts and the torchvision module layout."""

from __future__ import annotations

import pytest
import torch

from requant_plugin.zoo.resnet_imagenet import resnet18, resnet34, resnet50


@pytest.mark.parametrize(("build", "params", "weights"), [
    (resnet18, 11_689_512, 21), (resnet34, 21_797_672, 37), (resnet50, 25_557_032, 54),
])
def test_parameter_counts_match_the_paper_networks(build, params: int, weights: int) -> None:
    net = build()
    assert sum(p.numel() for p in net.parameters()) == params
    assert sum(1 for p in net.parameters() if p.dim() > 1) == weights


def test_layout_and_forward_at_reduced_width() -> None:
    net = resnet18(num_classes=10, base=8).eval()
    names = dict(net.named_modules())
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1.0.conv1", "layer2.0.downsample.0", "avgpool", "fc"):
        assert name in names
    assert "layer1.0.downsample" not in names or names["layer1.0.downsample"] is None
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 10)
