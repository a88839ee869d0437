"""MobileNetV2 for 32x32 inputs (Sandler et al. 2018), written for CIFAR-10.

Inverted residual blocks ``1x1 expand -> BN -> ReLU6 -> 3x3 depthwise -> BN -> ReLU6 -> 1x1
project -> BN`` (+ identity when stride 1 and widths match). For 32x32 inputs the stem has
stride 1 and only three stages down-sample (8x in all: 32 -> 16 -> 8 -> 4), a common CIFAR
adaptation of the ImageNet network (which down-samples 32x). Channel widths are the paper's
times ``width``, rounded to multiples of 8; the last 1x1 conv keeps 1280 channels for
``width <= 1`` as in the paper. Module names follow the usual ``features.N`` / ``classifier``
layout, so tools that expect torchvision-style names find the same structure.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["InvertedResidual", "MobileNetV2Cifar", "mobilenetv2_x0_5"]

#: ``(expansion t, output channels c, repeats n, first stride s)`` per stage (the paper's table,
#: with the second stage's stride 2 -> 1 for 32x32 inputs).
CIFAR_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor``, never below 90 % of it."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """``y = x + project(depthwise(expand(x)))`` when ``stride == 1`` and ``cin == cout``, else without ``x``."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn(cin, hidden, 1, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, 1, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2Cifar(nn.Module):
    """MobileNetV2 for 32x32 images: stem 3x3 (stride 1), 17 inverted residuals, 1x1 to 1280, pool, linear."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        cin = _divisible(32 * width)
        last = _divisible(1280 * max(1.0, width))
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 1)]
        for t, c, n, s in CIFAR_SETTING:
            cout = _divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(_conv_bn(cin, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.classifier(self.pool(self.features(x)).flatten(1))
        return out


def mobilenetv2_x0_5(num_classes: int = 10) -> MobileNetV2Cifar:
    """MobileNetV2 at width 0.5 for CIFAR-10 (0.70M parameters)."""
    return MobileNetV2Cifar(num_classes, width=0.5)
