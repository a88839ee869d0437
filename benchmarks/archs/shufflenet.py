"""ShuffleNetV2 x0.5 (Ma et al. 2018) in torchvision's layout: channel split, branch, concat, shuffle.

``conv1`` (3x3/2 to 24), ``maxpool``, ``stage2..stage4`` (4, 8, 4 units), ``conv5`` (1x1 to 1024),
mean over HW, ``fc``. A stride-1 unit splits the channels in halves, transforms one
(``branch2``) and concatenates; a stride-2 unit runs ``branch1`` and ``branch2`` on the whole input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmarks.archs.layers import init_weights

__all__ = ["ShuffleNetV2", "InvertedResidual", "channel_shuffle", "shufflenet_v2_x0_5"]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """``(N, g*c, H, W) -> (N, c*g, H, W)``: view as ``(N, g, c, H, W)``, swap ``g`` and ``c``, flatten back."""
    n, channels, h, w = x.size()
    x = x.view(n, groups, channels // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, -1, h, w)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, bias=False, groups=channels)


class InvertedResidual(nn.Module):
    """``shuffle(cat(x1, branch2(x2)))`` at stride 1 (``x1, x2 = split(x)``), else ``shuffle(cat(b1(x), b2(x)))``."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2) or (stride == 1 and cin != 2 * (cout // 2)):
            raise ValueError(f"InvertedResidual({cin}, {cout}, stride={stride}): stride must be 1 or 2, and a "
                             "stride-1 unit needs cin == cout (even)")
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(_depthwise(cin, stride), nn.BatchNorm2d(cin),
                                         nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half),
                                         nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride > 1 else half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            _depthwise(half, stride), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """``conv1 -> maxpool -> stage2 -> stage3 -> stage4 -> conv5 -> mean_hw -> fc``."""

    def __init__(self, repeats: tuple[int, int, int], widths: tuple[int, int, int, int, int],
                 num_classes: int = 1000) -> None:
        super().__init__()
        cin = widths[0]
        self.conv1 = nn.Sequential(nn.Conv2d(3, cin, 3, 2, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        for n, cout in zip(repeats, widths[1:4], strict=True):
            units = [InvertedResidual(cin, cout, 2)] + [InvertedResidual(cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*units))
            cin = cout
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(nn.Conv2d(cin, widths[4], 1, bias=False), nn.BatchNorm2d(widths[4]),
                                   nn.ReLU(inplace=True))
        self.fc = nn.Linear(widths[4], num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))  # type: ignore[no-any-return]


def shufflenet_v2_x0_5(num_classes: int = 1000) -> ShuffleNetV2:
    """ShuffleNetV2 x0.5 (1,366,792 parameters at 1000 classes)."""
    return ShuffleNetV2((4, 8, 4), (24, 48, 96, 192, 1024), num_classes)
