"""ImageNet-layout ResNets (He et al. 2016) for 224x224 inputs, written for tests and benchmarks.

The module layout and names follow the common torchvision definition (``conv1``, ``bn1``,
``relu``, ``maxpool``, ``layer1``..``layer4``, ``avgpool``, ``fc``; blocks with ``conv1``..,
``bn1``.., ``downsample``; ONE ``relu`` module called twice per block), so users' networks of that
shape, and the quirks host frameworks have with them, are reproduced without torchvision (whose
wheel here is a CUDA build that cannot load next to the CPU torch). Weights are random (Kaiming);
no pretrained weights ship.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Bottleneck", "ImageNetBasicBlock", "ImageNetResNet", "resnet18", "resnet34", "resnet50"]


class ImageNetBasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, 3x3 convolutions."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _shortcut(cin, width, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)  # type: ignore[no-any-return]


class Bottleneck(nn.Module):
    """``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))``: 1x1, 3x3 (stride), 1x1 x4."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, width * 4, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)  # type: ignore[no-any-return]


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ImageNetResNet(nn.Module):
    """Stem ``conv 7x7/2 -> BN -> ReLU -> maxpool 3x3/2``, four stages (widths ``base * 2**i``), pool, ``fc``."""

    def __init__(self, block: type[ImageNetBasicBlock | Bottleneck], layers: tuple[int, int, int, int],
                 num_classes: int = 1000, base: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = base
        stages: list[nn.Sequential] = []
        for i, n in enumerate(layers):
            width = base * 2**i
            blocks: list[nn.Module] = []
            for j in range(n):
                blocks.append(block(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))  # type: ignore[no-any-return]


def resnet18(num_classes: int = 1000, base: int = 64) -> ImageNetResNet:
    """ResNet-18 (11.7M parameters at ``base=64``, 1000 classes)."""
    return ImageNetResNet(ImageNetBasicBlock, (2, 2, 2, 2), num_classes, base)


def resnet34(num_classes: int = 1000, base: int = 64) -> ImageNetResNet:
    """ResNet-34 (21.8M parameters at ``base=64``)."""
    return ImageNetResNet(ImageNetBasicBlock, (3, 4, 6, 3), num_classes, base)


def resnet50(num_classes: int = 1000, base: int = 64) -> ImageNetResNet:
    """ResNet-50 (25.6M parameters at ``base=64``; 54 weight tensors)."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes, base)
