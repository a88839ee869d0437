"""Data and models for the benchmarks: CIFAR-10 test images and calibration batches, the shared
pretrained ResNets, per-layer weight rewriting, and the ResNet-50-sized random weight set."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

#: ``fn(layer name, weight copy, channel axis) -> quantized weight`` of the same shape
WeightFn = Callable[[str, torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class Images:
    """Normalised NCHW float32 test images and int64 labels as NumPy arrays."""

    x: np.ndarray
    y: np.ndarray

    @property
    def n(self) -> int:
        return int(self.y.shape[0])


def load_test_images(limit: int | None = None, seed: int = 0) -> Images:
    """The CIFAR-10 test set (all 10k, or a seeded class-stratified subset of ``limit``)."""
    from requant_plugin.data import load_cifar10

    ds = load_cifar10(train_limit=0, test_limit=limit, seed=seed)
    return Images(ds.x_test.numpy(), ds.y_test.numpy())


def load_calibration(n_images: int, seed: int = 0, batch_size: int = 32) -> list[torch.Tensor]:
    """``n_images`` seeded random TRAIN images in batches (for activation observers)."""
    from requant_plugin.data import load_cifar10

    ds = load_cifar10(train_limit=10000, test_limit=10, seed=seed)
    return ds.calibration_batches(n_images, batch_size=batch_size, seed=seed)


def load_fp32(name: str) -> nn.Module:
    """A shared pretrained CIFAR-10 ResNet (``resnet20``/``resnet56``) in eval mode."""
    from requant_plugin.zoo import load_model

    return load_model(name).eval()


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv/ConvTranspose/Linear layer, in registration order."""
    from requant_plugin.ptq import quantizable_layers

    return quantizable_layers(model)


@torch.no_grad()
def apply_per_layer(model: nn.Module, fn: WeightFn, *, fold_bn: bool = False) -> nn.Module:
    """A copy of ``model`` (BN folded first if asked) with each layer's weight ``fn(name, w, ch_axis)``."""
    from requant_plugin.ptq import fold_bn_, weight_ch_axis

    out = copy.deepcopy(model).eval()
    if fold_bn:
        fold_bn_(out)
    for name, module in weight_layers(out):
        w: torch.Tensor = module.weight  # type: ignore[assignment]
        w_hat = fn(name, w.detach().clone(), weight_ch_axis(module))
        if w_hat.shape != w.shape:
            raise RuntimeError(f"{name}: quantizer returned shape {tuple(w_hat.shape)} for {tuple(w.shape)}")
        w.copy_(w_hat.to(w.dtype))
    return out


def weights_digest(model: nn.Module) -> str:
    """Short hash of all parameters (to tell identical quantized models apart)."""
    h = hashlib.sha1()
    for _, p in sorted(model.state_dict().items()):
        if p.is_floating_point():
            h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def resnet50_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """The 54 weight tensors of torchvision's ResNet-50 (53 convs + fc), 25.5M values."""
    shapes: list[tuple[str, tuple[int, ...]]] = [("conv1", (64, 3, 7, 7))]
    inplanes = 64
    for stage, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            pre = f"layer{stage}.{b}"
            shapes += [
                (f"{pre}.conv1", (planes, inplanes, 1, 1)),
                (f"{pre}.conv2", (planes, planes, 3, 3)),
                (f"{pre}.conv3", (planes * 4, planes, 1, 1)),
            ]
            if b == 0:
                shapes.append((f"{pre}.downsample.0", (planes * 4, inplanes, 1, 1)))
            inplanes = planes * 4
    shapes.append(("fc", (1000, 2048)))
    return shapes


def resnet50_weights(seed: int = 0, scale_down: int = 1) -> list[tuple[str, torch.Tensor]]:
    """Seeded He-normal tensors with ResNet-50's shapes (``scale_down`` divides the channel
    counts for quick runs; 1 gives the real 25.5M values)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name, shape in resnet50_shapes():
        s = list(shape)
        if scale_down > 1:
            s[0] = max(1, s[0] // scale_down)
            if s[1] > 3:
                s[1] = max(1, s[1] // scale_down)
        fan_in = int(np.prod(s[1:]))
        out.append((name, torch.randn(s, generator=gen) * float(np.sqrt(2.0 / fan_in))))
    return out


def model_weights(name: str, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """``(layer, weight)`` of a shared ResNet, or of the ResNet-50-sized random set
    (``"resnet50-random"``; ``"resnet50-random/16"`` for a 1/16-width quick version)."""
    if name.startswith("resnet50-random"):
        div = int(name.split("/")[1]) if "/" in name else 1
        return resnet50_weights(seed, div)
    model = load_fp32(name)
    out = []
    for n, m in weight_layers(model):
        w: torch.Tensor = m.weight  # type: ignore[assignment]
        out.append((n, w.detach().clone()))
    return out
