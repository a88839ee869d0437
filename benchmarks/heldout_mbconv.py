"""Held-out architecture check: a small EfficientNet-style CIFAR network (depthwise MBConv blocks with
squeeze-and-excitation gates, SiLU, residual adds), never used to develop the recipes, through the rows of
:mod:`benchmarks.heldout_vgg`.

``python -m benchmarks.heldout_mbconv [--train] [--seeds 0 1 2] [--fx-seeds 0 1 2 3 4]`` (the defaults shown)

The network: a 3x3 stride-2 Conv-BN-SiLU stem (24 channels), MBConv blocks (1x1 expansion Conv-BN-SiLU, 3x3 depthwise
Conv-BN-SiLU, squeeze-and-excitation: pool, 1x1 conv, SiLU, 1x1 conv, sigmoid, multiply; 1x1 projection
Conv-BN; the input added where the shapes match) of widths 24 (x1, expansion 1), 40 (x2, stride 2) and 80 (x2,
stride 2), expansion 4, a 1x1 Conv-BN-SiLU head to 320 channels, global average pooling and a Linear
classifier. Trained here as the VGG (:func:`benchmarks.heldout_vgg.train`: seeded, the first 45,000 training
images, 6 epochs; weights in ``benchmarks/results/``) when ``--train`` is given or no weights file exists.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from benchmarks.harness.paths import RESULTS
from benchmarks.heldout_vgg import Heldout
from benchmarks.heldout_vgg import main as heldout_main

WEIGHTS = RESULTS / "heldout_mbconv_se.pt"


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """``x * sigmoid(W2 silu(W1 mean(x)))`` per channel, with a ``c / 4``-wide bottleneck."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Expansion (if ``expand > 1``), depthwise 3x3, squeeze-and-excitation, projection; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = _conv_bn(cin, mid) if expand > 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, 3, stride, groups=mid)
        self.se = SqueezeExcite(mid, max(8, cin // 4))
        self.project = _conv_bn(mid, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class MBConvSE(nn.Module):
    """Stem 24 (stride 2, as EfficientNet's), MBConv 24 (x1, e1), 40 (x2, s2, e4), 80 (x2, s2, e4), head 320,
    pool, Linear: 16x16, 8x8 and 4x4 feature maps on CIFAR's 32x32."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        blocks = [MBConv(24, 24, 1, 1), MBConv(24, 40, 2, 4), MBConv(40, 40, 1, 4), MBConv(40, 80, 2, 4),
                  MBConv(80, 80, 1, 4)]
        self.features = nn.Sequential(_conv_bn(3, 24, 3, 2), *blocks, _conv_bn(80, 320))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(320, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))  # type: ignore[no-any-return]


NET = Heldout("heldout_mbconv", MBConvSE, WEIGHTS, "heldout-mbconv",
              "EfficientNet-style network: depthwise MBConv blocks with squeeze-and-excitation")


def main(argv: Sequence[str] | None = None) -> int:
    return heldout_main(argv, NET)


if __name__ == "__main__":
    raise SystemExit(main())
