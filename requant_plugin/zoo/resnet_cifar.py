"""CIFAR-10 ResNets (He et al. 2016, section 4.2) with the parameter-free "option A" shortcut.

The layout follows ``shared/models/README.md`` exactly so that the shipped ``state_dict`` files
load with ``strict=True``:

* stem ``conv1`` (3 -> 16) -> ``bn1`` -> ReLU,
* three stages ``layer1``..``layer3`` (``nn.Sequential`` of :class:`BasicBlock`, widths 16/32/64,
  stride 2 on the first block of ``layer2`` and ``layer3``),
* global average pool -> ``linear`` (64 -> ``num_classes``).

Every ReLU is its own ``nn.ReLU`` module and the shortcut choice is fixed at construction time,
so the network is free of tensor-dependent control flow and traces cleanly with ``torch.fx``,
``torch.export`` and ``torch.onnx``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "LambdaShortcut",
    "OptionAShortcut",
    "count_parameters",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
]


class OptionAShortcut(nn.Module):
    """Parameter-free downsampling shortcut ("option A").

    Subsamples rows and columns with stride 2 and zero-pads the channel dimension with
    ``planes // 4`` channels on each side, so the input channels sit in the middle.
    """

    def __init__(self, planes: int) -> None:
        """Create the shortcut for a block whose output width is ``planes``."""
        super().__init__()
        self.planes = planes
        self.pad = planes // 4

    def forward(self, x: Tensor) -> Tensor:
        """Subsample by 2 spatially and zero-pad channels to ``planes``."""
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        """Show the padding in ``print(model)``."""
        return f"planes={self.planes}, pad={self.pad}"


LambdaShortcut = OptionAShortcut
"""Alias under the name used by the upstream implementation's ``LambdaLayer``-style shortcut."""


class BasicBlock(nn.Module):
    """Two 3x3 conv/BN pairs with a residual connection and a ReLU after the addition."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        """Build a block mapping ``in_planes`` channels to ``planes`` with the given stride."""
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            if stride != 2 or planes != 2 * in_planes:
                raise ValueError(
                    "option-A shortcut needs stride 2 and doubled width, got "
                    f"in_planes={in_planes}, planes={planes}, stride={stride}"
                )
            self.shortcut = OptionAShortcut(planes)
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """Apply ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        result: Tensor = self.relu2(out)
        return result


class CifarResNet(nn.Module):
    """ResNet of depth ``6n + 2`` for 32x32 RGB inputs (ResNet-20/32/44/56/...)."""

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        """Build the network; ``depth`` must be of the form ``6n + 2`` with ``n >= 1``."""
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, ...), got {depth}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.depth = depth
        self.num_classes = num_classes
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = self._make_stage(16, 16, blocks, stride=1)
        self.layer2 = self._make_stage(16, 32, blocks, stride=2)
        self.layer3 = self._make_stage(32, 64, blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(64, num_classes)
        self._init_weights()

    @staticmethod
    def _make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        """Stack ``blocks`` basic blocks; only the first one may change stride and width."""
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        """Kaiming-normal init for conv and linear weights (only matters when training)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Map a batch ``[N, 3, H, W]`` of normalised images to ``[N, num_classes]`` logits."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = self.flatten(self.avgpool(out))
        result: Tensor = self.linear(out)
        return result


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 (n = 3): 269,722 parameters for 10 classes."""
    return CifarResNet(20, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32 (n = 5)."""
    return CifarResNet(32, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    """ResNet-44 (n = 7)."""
    return CifarResNet(44, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 (n = 9): 853,018 parameters for 10 classes."""
    return CifarResNet(56, num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameter elements (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
