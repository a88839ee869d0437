"""RegNetX-400MF (Radosavovic et al. 2020) in torchvision's layout: residual bottlenecks with grouped 3x3.

``stem`` (3x3/2 to 32), ``trunk_output`` (stages ``block1..block4``, blocks ``block{s}-{i}`` with
``proj`` shortcut where shape changes and ``f = [a 1x1, b grouped 3x3, c 1x1]``), ``avgpool``, ``fc``.
Stage widths and depths come from the quantized linear rule ``w_j = w_0 + w_a j`` snapped to
``w_0 w_m^round(log(w_j / w_0) / log w_m)`` and rounded to multiples of 8.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import Tensor, nn

from benchmarks.archs.layers import ConvBNAct, init_weights, make_divisible

__all__ = ["AnyStage", "BottleneckTransform", "RegNet", "ResBottleneckBlock", "regnet_stages", "regnet_x_400mf"]


def regnet_stages(depth: int, w_0: int, w_a: float, w_m: float, group_width: int) -> list[tuple[int, int, int]]:
    """``(width, depth, group width)`` per stage from the RegNet parameters (bottleneck multiplier 1)."""
    caps = [round(math.log((w_0 + w_a * j) / w_0) / math.log(w_m)) for j in range(depth)]
    widths = [int(round(w_0 * w_m**c / 8) * 8) for c in caps]
    stages: list[list[int]] = []
    for w in widths:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    out = []
    for w, d in stages:
        g = min(group_width, w)
        out.append((make_divisible(w, g), d, g))
    return out


class BottleneckTransform(nn.Sequential):
    """``c(b(a(x)))``: 1x1 to the bottleneck width, grouped 3x3 (stride), 1x1 without activation."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int) -> None:
        groups = cout // group_width
        super().__init__(OrderedDict([
            ("a", ConvBNAct(cin, cout, 1)),
            ("b", ConvBNAct(cout, cout, 3, stride, groups=groups)),
            ("c", ConvBNAct(cout, cout, 1, act=None)),
        ]))


class ResBottleneckBlock(nn.Module):
    """``relu(proj(x) + f(x))``, ``proj`` a 1x1 conv + BN when width or stride changes, else the identity."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int) -> None:
        super().__init__()
        self.proj = ConvBNAct(cin, cout, 1, stride, act=None) if cin != cout or stride != 1 else None
        self.f = BottleneckTransform(cin, cout, stride, group_width)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.proj is None else self.proj(x)
        return self.activation(shortcut + self.f(x))  # type: ignore[no-any-return]


class AnyStage(nn.Sequential):
    """``depth`` residual blocks named ``block{index}-{i}``; the first one strides and changes width."""

    def __init__(self, cin: int, cout: int, depth: int, group_width: int, index: int) -> None:
        super().__init__()
        for i in range(depth):
            self.add_module(f"block{index}-{i}", ResBottleneckBlock(cin if i == 0 else cout, cout, 2 if i == 0 else 1,
                                                                   group_width))


class RegNet(nn.Module):
    """``fc(mean_hw(trunk_output(stem(x))))`` with the stages given as ``(width, depth, group width)``."""

    def __init__(self, stages: list[tuple[int, int, int]], num_classes: int = 1000, stem_width: int = 32) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, stem_width, 3, 2)
        blocks: list[tuple[str, nn.Module]] = []
        cin = stem_width
        for i, (width, depth, group_width) in enumerate(stages, start=1):
            blocks.append((f"block{i}", AnyStage(cin, width, depth, group_width, i)))
            cin = width
        self.trunk_output = nn.Sequential(OrderedDict(blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)
        # fan-out (torchvision's RegNet init): with fan-in the 22 residual sums would grow activations ~1000x
        init_weights(self, conv_mode="fan_out")

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.trunk_output(self.stem(x)))
        return self.fc(x.flatten(1))  # type: ignore[no-any-return]


def regnet_x_400mf(num_classes: int = 1000) -> RegNet:
    """RegNetX-400MF: depth 22, ``w_0=24, w_a=24.48, w_m=2.54``, group width 16 (5,495,976 parameters)."""
    return RegNet(regnet_stages(22, 24, 24.48, 2.54, 16), num_classes)
