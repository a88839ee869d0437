"""MobileNetV2 (Sandler et al. 2018) and MobileNetV3-Small (Howard et al. 2019), torchvision's layout.

V2: ``features`` (stem, 17 inverted residuals ``InvertedResidual.conv``, 1x1 to 1280), global
average, ``classifier = [Dropout, Linear]``. V3-Small: ``features`` (Hardswish stem, 11 blocks
``InvertedResidualV3.block`` with squeeze-excite gated by Hardsigmoid, 1x1 to 576), ``avgpool``,
``classifier = [Linear 576->1024, Hardswish, Dropout, Linear]``; BatchNorm ``eps=1e-3, momentum=0.01``.
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn
from torch.nn import functional as F

from benchmarks.archs.layers import ConvBNAct, SqueezeExcitation, init_weights, make_divisible

__all__ = ["InvertedResidual", "InvertedResidualV3", "MobileNetV2", "MobileNetV3", "mobilenet_v2",
           "mobilenet_v3_small"]

# (expand ratio t, output channels c, repeats n, first stride s)
V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1))

# (input, kernel, expanded, output, squeeze-excite, activation "RE"/"HS", stride)
V3_SMALL_SETTING = ((16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2),
                    (24, 3, 88, 24, False, "RE", 1), (24, 5, 96, 40, True, "HS", 2),
                    (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
                    (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1),
                    (48, 5, 288, 96, True, "HS", 2), (96, 5, 576, 96, True, "HS", 1),
                    (96, 5, 576, 96, True, "HS", 1))


class InvertedResidual(nn.Module):
    """``x + project(depthwise(expand(x)))`` (residual only at stride 1 with equal widths); ReLU6 inside."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        self.stride = stride
        hidden = cin * expand_ratio
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(cin, hidden, 1, act=nn.ReLU6))
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)  # type: ignore[no-any-return]
        return self.conv(x)  # type: ignore[no-any-return]


class MobileNetV2(nn.Module):
    """Stem 3x3/2 to 32, inverted residuals per ``V2_SETTING``, 1x1 to 1280, mean over HW, classifier."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        cin, last = 32, 1280
        features: list[nn.Module] = [ConvBNAct(3, cin, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in V2_SETTING:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(ConvBNAct(cin, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last, num_classes))
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(x.flatten(1))  # type: ignore[no-any-return]


class InvertedResidualV3(nn.Module):
    """``x + project(SE(depthwise(expand(x))))`` with ReLU or Hardswish; SE squeezes to ``expanded / 4``."""

    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, use_se: bool, activation: str,
                 stride: int) -> None:
        super().__init__()
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        act = nn.Hardswish if activation == "HS" else nn.ReLU
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(ConvBNAct(cin, expanded, 1, act=act, norm=norm))
        layers.append(ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, act=act, norm=norm))
        if use_se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4, 8), gate=nn.Hardsigmoid))
        layers.append(ConvBNAct(expanded, cout, 1, act=None, norm=norm))
        self.block = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.block(x)  # type: ignore[no-any-return]
        return self.block(x)  # type: ignore[no-any-return]


class MobileNetV3(nn.Module):
    """Hardswish stem 3x3/2 to 16, blocks per ``setting``, 1x1 to ``6 * last width``, pool, 2-layer head."""

    def __init__(self, setting: tuple[tuple, ...], last_channel: int, num_classes: int = 1000,
                 dropout: float = 0.2) -> None:
        super().__init__()
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        features: list[nn.Module] = [ConvBNAct(3, setting[0][0], 3, 2, act=nn.Hardswish, norm=norm)]
        features += [InvertedResidualV3(*cfg) for cfg in setting]
        width = setting[-1][3]
        features.append(ConvBNAct(width, 6 * width, 1, act=nn.Hardswish, norm=norm))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * width, last_channel), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=dropout, inplace=True), nn.Linear(last_channel, num_classes))
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))  # type: ignore[no-any-return]


def mobilenet_v2(num_classes: int = 1000) -> MobileNetV2:
    """MobileNetV2 1.0x (3,504,872 parameters at 1000 classes)."""
    return MobileNetV2(num_classes)


def mobilenet_v3_small(num_classes: int = 1000) -> MobileNetV3:
    """MobileNetV3-Small 1.0x (2,542,856 parameters at 1000 classes)."""
    return MobileNetV3(V3_SMALL_SETTING, 1024, num_classes)
