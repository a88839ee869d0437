"""DenseNet-121 (Huang et al. 2017) in torchvision's layout: every layer sees the concat of all before it.

``features`` = ``conv0, norm0, relu0, pool0``, then ``denseblock1..4`` (6, 12, 24, 16 layers, growth 32)
with ``transition1..3`` (BN, ReLU, 1x1 halving the channels, 2x2 average pool) between them, and
``norm5``; the head is ``relu -> mean_hw -> classifier``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmarks.archs.layers import init_weights

__all__ = ["DenseBlock", "DenseLayer", "DenseNet", "Transition", "densenet121"]


class DenseLayer(nn.Module):
    """``conv2(relu2(norm2(conv1(relu1(norm1(cat(features))))))``: bottleneck 1x1 to ``bn_size*k``, 3x3 to ``k``."""

    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))  # type: ignore[no-any-return]


class DenseBlock(nn.ModuleDict):
    """``cat(x, l_1, ..., l_n)`` where ``l_i = denselayer_i([x, l_1, ..., l_{i-1}])``."""

    def __init__(self, num_layers: int, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, bn_size))

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """``pool(conv(relu(norm(x))))``: 1x1 to ``cout`` channels, then 2x2 average pool."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(cin))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(kernel_size=2, stride=2))


class DenseNet(nn.Module):
    """Stem 7x7/2 + maxpool, dense blocks with halving transitions, ``norm5``, ReLU, pool, ``classifier``."""

    def __init__(self, growth: int = 32, blocks: tuple[int, ...] = (6, 12, 24, 16), init_features: int = 64,
                 bn_size: int = 4, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, init_features, 7, 2, 3, bias=False)),
            ("norm0", nn.BatchNorm2d(init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        channels = init_features
        for i, n in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(n, channels, growth, bn_size))
            channels += n * growth
            if i != len(blocks) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.features(x), inplace=True)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(x.flatten(1))  # type: ignore[no-any-return]


def densenet121(num_classes: int = 1000) -> DenseNet:
    """DenseNet-121: growth 32, blocks (6, 12, 24, 16), 64 stem features (7,978,856 parameters)."""
    return DenseNet(32, (6, 12, 24, 16), 64, 4, num_classes)
