"""ImageNet classifiers with torchvision's module layout and parameter counts, written without torchvision.

Users quantize torchvision-shaped networks; these definitions reproduce their structure (module
names, Sequential nesting, concat / channel-shuffle / squeeze-excite / grouped and depthwise convs /
LayerNorm / ``nn.MultiheadAttention``) so the library can be exercised on them here, where the
torchvision wheel cannot be imported. Weights are random (Kaiming-style init, BN ``weight=1``); no
pretrained weights ship. ``build(name)`` returns a model in eval mode::

    from benchmarks.archs import ARCHS, build
    model = build("mobilenet_v3_small", num_classes=10)
    vit = build("vit_b_16", image_size=64)      # ViT's position embedding is sized for 64x64 inputs

``ArchInfo.min_size`` is the smallest square side a net takes in eval: 32 for the nets that
downsample by 32 (their last feature map is then 1x1), 75 for Inception v3, 16 for ViT-B/16 (which
only accepts inputs of the side it was built for, any multiple of 16).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from benchmarks.archs.convnext import convnext_tiny
from benchmarks.archs.densenet import densenet121
from benchmarks.archs.efficientnet import efficientnet_b0
from benchmarks.archs.inception import inception_v3
from benchmarks.archs.mobilenet import mobilenet_v2, mobilenet_v3_small
from benchmarks.archs.regnet import regnet_x_400mf
from benchmarks.archs.shufflenet import shufflenet_v2_x0_5
from benchmarks.archs.squeezenet import squeezenet1_1
from benchmarks.archs.vit import vit_b_16
from requant_plugin.zoo.resnet_imagenet import resnet18, resnet50

__all__ = ["ARCHS", "ArchInfo", "build", "convnext_tiny", "densenet121", "efficientnet_b0", "inception_v3",
           "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "resnet18", "resnet50", "shufflenet_v2_x0_5",
           "squeezenet1_1", "vit_b_16"]


@dataclass(frozen=True)
class ArchInfo:
    """One architecture: its builder (``build(num_classes=...)``), default and smallest square input side,
    and torchvision's parameter count at 1000 classes (224x224 for ViT)."""

    name: str
    build: Callable[..., nn.Module]
    input_size: int = 224
    min_size: int = 32
    params: int = 0


ARCHS: dict[str, ArchInfo] = {a.name: a for a in (
    ArchInfo("resnet18", resnet18, params=11_689_512),
    ArchInfo("resnet50", resnet50, params=25_557_032),
    ArchInfo("mobilenet_v2", mobilenet_v2, params=3_504_872),
    ArchInfo("mobilenet_v3_small", mobilenet_v3_small, params=2_542_856),
    ArchInfo("efficientnet_b0", efficientnet_b0, params=5_288_548),
    ArchInfo("shufflenet_v2_x0_5", shufflenet_v2_x0_5, params=1_366_792),
    ArchInfo("regnet_x_400mf", regnet_x_400mf, params=5_495_976),
    ArchInfo("densenet121", densenet121, params=7_978_856),
    ArchInfo("squeezenet1_1", squeezenet1_1, params=1_235_496),
    ArchInfo("inception_v3", inception_v3, input_size=299, min_size=75, params=27_161_264),
    ArchInfo("convnext_tiny", convnext_tiny, params=28_589_128),
    ArchInfo("vit_b_16", vit_b_16, min_size=16, params=86_567_656),
)}


def build(name: str, *, num_classes: int = 1000, image_size: int | None = None) -> nn.Module:
    """The architecture ``name`` with ``num_classes`` outputs, randomly initialized, in eval mode.

    ``image_size`` sizes ViT's position embedding (default 224); the convolutional nets ignore it.
    """
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; valid names: {', '.join(ARCHS)}")
    builder = ARCHS[name].build
    kwargs: dict[str, int] = {"num_classes": num_classes}
    if image_size is not None and "image_size" in inspect.signature(builder).parameters:
        kwargs["image_size"] = image_size
    return builder(**kwargs).eval()
