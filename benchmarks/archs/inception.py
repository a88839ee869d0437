"""Inception v3 (Szegedy et al. 2016) in torchvision's layout, default input 299x299 (75x75 at least).

Stem ``Conv2d_1a_3x3 .. Conv2d_4a_3x3`` with two max pools, ``Mixed_5b..5d`` (InceptionA),
``Mixed_6a`` (B, grid reduction), ``Mixed_6b..6e`` (C, factorized 7x7), ``Mixed_7a`` (D, reduction),
``Mixed_7b..7c`` (E, split 3x3), pool, dropout, ``fc``. ``AuxLogits`` (an auxiliary classifier on the
17x17 grid) exists when ``aux_logits`` is set and only runs in training, where the forward returns
``InceptionOutputs(logits, aux_logits)``; in eval it returns the logits alone. Every conv is
``BasicConv2d`` = conv (no bias) + BatchNorm(eps=1e-3) + ReLU.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmarks.archs.layers import init_weights

__all__ = ["BasicConv2d", "Inception3", "InceptionA", "InceptionAux", "InceptionB", "InceptionC", "InceptionD",
           "InceptionE", "InceptionOutputs", "inception_v3"]


class InceptionOutputs(NamedTuple):
    logits: Tensor
    aux_logits: Tensor | None


class BasicConv2d(nn.Module):
    """``relu(bn(conv(x)))`` with a bias-free conv and BatchNorm ``eps=1e-3``."""

    def __init__(self, cin: int, cout: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _pool3(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """``cat(1x1 -> 64, 1x1 -> 5x5 -> 64, 1x1 -> 3x3 -> 3x3 -> 96, avgpool -> 1x1 -> pool_features)``."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_pool3(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction: ``cat(3x3/2 -> 384, 1x1 -> 3x3 -> 3x3/2 -> 96, maxpool 3x3/2)``."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


def _conv1x7(cin: int, cout: int) -> BasicConv2d:
    return BasicConv2d(cin, cout, kernel_size=(1, 7), padding=(0, 3))


def _conv7x1(cin: int, cout: int) -> BasicConv2d:
    return BasicConv2d(cin, cout, kernel_size=(7, 1), padding=(3, 0))


class InceptionC(nn.Module):
    """``cat(1x1, 1x1 -> 1x7 -> 7x1, 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7, avgpool -> 1x1)``, 192 channels each."""

    def __init__(self, cin: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = _conv1x7(c7, c7)
        self.branch7x7_3 = _conv7x1(c7, 192)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = _conv7x1(c7, c7)
        self.branch7x7dbl_3 = _conv1x7(c7, c7)
        self.branch7x7dbl_4 = _conv7x1(c7, c7)
        self.branch7x7dbl_5 = _conv1x7(c7, 192)
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_2(self.branch7x7dbl_1(x))
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(d)))
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_pool3(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction: ``cat(1x1 -> 3x3/2 -> 320, 1x1 -> 1x7 -> 7x1 -> 3x3/2 -> 192, maxpool 3x3/2)``."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = _conv1x7(192, 192)
        self.branch7x7x3_3 = _conv7x1(192, 192)
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """``cat(1x1 -> 320, 1x1 -> [1x3, 3x1] -> 768, 1x1 -> 3x3 -> [1x3, 3x1] -> 768, avgpool -> 1x1 -> 192)``."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(_pool3(x))], 1)


class InceptionAux(nn.Module):
    """``fc(mean_hw(conv1(conv0(avgpool_5x5/3(x)))))``: 1x1 to 128, 5x5 to 768, linear head (17x17 input)."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(cin, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))  # type: ignore[no-any-return]


class Inception3(nn.Module):
    """Inception v3; ``forward`` returns logits in eval, ``InceptionOutputs`` in training with ``aux_logits``."""

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.5) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.AuxLogits: InceptionAux | None = InceptionAux(768, num_classes) if aux_logits else None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor | InceptionOutputs:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.maxpool1(x)))
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(self.maxpool2(x))))
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        aux = self.AuxLogits(x) if self.AuxLogits is not None and self.training else None
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        x = self.fc(torch.flatten(self.dropout(self.avgpool(x)), 1))
        if self.training and self.aux_logits:
            return InceptionOutputs(x, aux)
        return x


def inception_v3(num_classes: int = 1000, aux_logits: bool = True) -> Inception3:
    """Inception v3 (27,161,264 parameters with the auxiliary classifier at 1000 classes; 299x299 input)."""
    return Inception3(num_classes, aux_logits)
