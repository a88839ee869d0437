"""SqueezeNet 1.1 (Iandola et al. 2016) in torchvision's layout: fire modules concatenating 1x1 and 3x3.

``features`` = 3x3/2 conv to 64, ReLU, ceil-mode max pools between eight ``Fire`` modules;
``classifier = [Dropout, final_conv 1x1 to classes, ReLU, global average]``, flattened.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmarks.archs.layers import init_weights

__all__ = ["Fire", "SqueezeNet", "squeezenet1_1"]


class Fire(nn.Module):
    """``cat(relu(expand1x1(s)), relu(expand3x3(s)))`` with ``s = relu(squeeze(x))`` (a 1x1 bottleneck)."""

    def __init__(self, cin: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    """``flatten(classifier(features(x)))``; the classifier is a 1x1 conv, so logits are ReLU'd then pooled."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        pool = (3, 2)
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(*pool, ceil_mode=True), Fire(64, 16, 64, 64), Fire(128, 16, 64, 64),
            nn.MaxPool2d(*pool, ceil_mode=True), Fire(128, 32, 128, 128), Fire(256, 32, 128, 128),
            nn.MaxPool2d(*pool, ceil_mode=True), Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
        )
        final_conv = nn.Conv2d(512, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))
        init_weights(self)
        nn.init.normal_(final_conv.weight, mean=0.0, std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def squeezenet1_1(num_classes: int = 1000) -> SqueezeNet:
    """SqueezeNet 1.1 (1,235,496 parameters at 1000 classes)."""
    return SqueezeNet(num_classes)
