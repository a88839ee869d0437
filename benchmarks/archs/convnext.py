"""ConvNeXt-Tiny (Liu et al. 2022) in torchvision's layout.

``features`` = stem (4x4/4 patchify conv + channels LayerNorm), then four stages of ``CNBlock``
(3, 3, 9, 3 blocks at widths 96, 192, 384, 768) with downsampling layers (LayerNorm + 2x2/2 conv)
between them; ``avgpool``; ``classifier = [LayerNorm2d, Flatten, Linear]``. A block is
``x + drop_path(gamma * pw2(gelu(pw1(ln(dw7x7(x))))))`` computed channels-last via ``Permute``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmarks.archs.layers import Permute, StochasticDepth

__all__ = ["CNBlock", "ConvNeXt", "LayerNorm2d", "convnext_tiny"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an ``(N, C, H, W)`` tensor: permute to channels-last, normalize, back."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    """``x + drop_path(layer_scale * block(x))``, ``block`` = dw 7x7, LN, Linear 4x, GELU, Linear (channels-last)."""

    def __init__(self, dim: int, layer_scale: float, sd_prob: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(sd_prob, "row")

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer_scale * self.block(x)
        return self.stochastic_depth(out) + x  # type: ignore[no-any-return]


class ConvNeXt(nn.Module):
    """Patchify stem, stages of ``CNBlock`` with LN + 2x2/2 downsampling between, pool, LN + linear head."""

    def __init__(self, depths: tuple[int, ...] = (3, 3, 9, 3), dims: tuple[int, ...] = (96, 192, 384, 768),
                 num_classes: int = 1000, stochastic_depth_prob: float = 0.1, layer_scale: float = 1e-6) -> None:
        super().__init__()
        features: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4, bias=True),
                                                   LayerNorm2d(dims[0], eps=1e-6))]
        total, block_id = sum(depths), 0
        for i, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
            blocks = []
            for _ in range(depth):
                blocks.append(CNBlock(dim, layer_scale, stochastic_depth_prob * block_id / (total - 1.0)))
                block_id += 1
            features.append(nn.Sequential(*blocks))
            if i + 1 < len(dims):
                features.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6),
                                              nn.Conv2d(dim, dims[i + 1], kernel_size=2, stride=2)))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1),
                                        nn.Linear(dims[-1], num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)))  # type: ignore[no-any-return]


def convnext_tiny(num_classes: int = 1000) -> ConvNeXt:
    """ConvNeXt-Tiny (28,589,128 parameters at 1000 classes); stochastic depth 0.1, layer scale 1e-6."""
    return ConvNeXt((3, 3, 9, 3), (96, 192, 384, 768), num_classes)
