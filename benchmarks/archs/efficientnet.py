"""EfficientNet-B0 (Tan & Le 2019) in torchvision's layout: MBConv blocks with SiLU and squeeze-excite.

``features`` = stem 3x3/2 to 32, seven stages (each a ``Sequential`` of ``MBConv``), 1x1 to 1280;
then ``avgpool`` and ``classifier = [Dropout, Linear]``. Stochastic depth on the residual branch
grows linearly from 0 to 0.2 over the blocks and is the identity in eval mode.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from benchmarks.archs.layers import ConvBNAct, SqueezeExcitation, StochasticDepth, init_weights

__all__ = ["B0_SETTING", "EfficientNet", "MBConv", "efficientnet_b0"]

# (expand ratio, kernel, first stride, input channels, output channels, blocks)
B0_SETTING = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))


class MBConv(nn.Module):
    """``x + drop_path(project(SE(depthwise(expand(x)))))``; SE squeezes to ``max(1, input / 4)`` with SiLU."""

    def __init__(self, cin: int, cout: int, expand_ratio: int, kernel: int, stride: int, sd_prob: float) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        expanded = cin * expand_ratio
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(ConvBNAct(cin, expanded, 1, act=nn.SiLU))
        layers += [ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, act=nn.SiLU),
                   SqueezeExcitation(expanded, max(1, cin // 4), act=nn.SiLU),
                   ConvBNAct(expanded, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd_prob, "row")
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out)
            out = out + x
        return out  # type: ignore[no-any-return]


class EfficientNet(nn.Module):
    """Stem, MBConv stages per ``setting``, 1x1 to ``4 * last width``, pool, ``[Dropout, Linear]``."""

    def __init__(self, setting: tuple[tuple[int, ...], ...] = B0_SETTING, num_classes: int = 1000,
                 dropout: float = 0.2, stochastic_depth_prob: float = 0.2) -> None:
        super().__init__()
        features: list[nn.Module] = [ConvBNAct(3, setting[0][3], 3, 2, act=nn.SiLU)]
        total = sum(cfg[5] for cfg in setting)
        block_id = 0
        for expand, kernel, stride, cin, cout, n in setting:
            stage: list[nn.Module] = []
            for i in range(n):
                sd_prob = stochastic_depth_prob * block_id / total
                stage.append(MBConv(cin if i == 0 else cout, cout, expand, kernel, stride if i == 0 else 1, sd_prob))
                block_id += 1
            features.append(nn.Sequential(*stage))
        last_in = setting[-1][4]
        features.append(ConvBNAct(last_in, 4 * last_in, 1, act=nn.SiLU))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        fc = nn.Linear(4 * last_in, num_classes)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), fc)
        init_weights(self)
        init_range = 1.0 / math.sqrt(num_classes)
        nn.init.uniform_(fc.weight, -init_range, init_range)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))  # type: ignore[no-any-return]


def efficientnet_b0(num_classes: int = 1000) -> EfficientNet:
    """EfficientNet-B0 (5,288,548 parameters at 1000 classes)."""
    return EfficientNet(B0_SETTING, num_classes)
