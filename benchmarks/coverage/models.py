"""The architectures of the matrix: :mod:`benchmarks.archs` (torchvision-equivalent models, random
weights) plus ``tiny``, a small residual CNN with an attention head used by the unit tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.coverage.paths import Inputs
from benchmarks.harness.runtime import seed_everything


class Tiny(nn.Module):
    """Conv-BN-ReLU stem, a residual block, a 2-head self-attention over the pixels, a Linear head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.relu = nn.ReLU()
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = self.relu(self.conv(h) + h)
        return self.head(h.mean((2, 3)))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Arch:
    name: str
    input_size: int
    min_size: int


def _archs() -> dict[str, Arch]:
    found = {"tiny": Arch("tiny", 32, 8)}
    try:
        from benchmarks.archs import ARCHS
    except ImportError:  # benchmarks.archs not there: the repository's ResNet-18 stands in
        found["resnet18"] = Arch("resnet18", 224, 32)
        return found
    for name, spec in ARCHS.items():
        found[name] = Arch(name, int(spec.input_size), int(spec.min_size))
    return found


ARCHS: dict[str, Arch] = _archs()
#: the full matrix (everything but the unit-test model)
DEFAULT_ARCHS: tuple[str, ...] = tuple(n for n in ARCHS if n != "tiny")


def build_model(name: str, size: int, seed: int = 0, num_classes: int = 1000) -> nn.Module:
    """Arch ``name`` in eval mode, its weights drawn with ``seed`` (ViT is built for ``size``)."""
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}: valid values are {sorted(ARCHS)}")
    seed_everything(seed)
    if name == "tiny":
        return Tiny(num_classes).eval()
    try:
        from benchmarks.archs import build
    except ImportError:
        from requant_plugin.zoo.resnet_imagenet import resnet18

        return resnet18(num_classes).eval()
    return build(name, num_classes=num_classes, image_size=size).eval()


def make_inputs(size: int, *, batches: int, batch_size: int, test: int, seed: int = 0) -> Inputs:
    """Standard-normal images: ``batches`` calibration batches and ``test`` test images (another stream)."""
    gen = torch.Generator().manual_seed(seed)
    calib = [torch.randn(batch_size, 3, size, size, generator=gen) for _ in range(batches)]
    gen.manual_seed(seed + 1)
    return Inputs(calib, torch.randn(test, 3, size, size, generator=gen))
