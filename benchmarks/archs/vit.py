"""ViT-B/16 (Dosovitskiy et al. 2021) in torchvision's layout, for any ``image_size`` divisible by 16.

``conv_proj`` (16x16/16 patch embedding to 768), a learned ``class_token`` prepended, ``encoder``
(``pos_embedding`` added, 12 pre-norm ``EncoderBlock`` in ``layers.encoder_layer_{i}``, final ``ln``),
``heads.head`` on the class token. A block is ``x = x + MHA(ln_1(x)); x + mlp(ln_2(x))`` with
``torch.nn.MultiheadAttention`` (batch first) and ``mlp = [Linear, GELU, Dropout, Linear, Dropout]``.
The position embedding has ``(image_size / 16)^2 + 1`` rows, so the parameter count depends on
``image_size`` (86,567,656 at 224). Unlike torchvision (zero head), the head is initialized
``N(0, 0.02^2)`` so random-weight logits differ between classes.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

__all__ = ["MLPBlock", "Encoder", "EncoderBlock", "VisionTransformer", "vit_b_16"]


class MLPBlock(nn.Sequential):
    """``dropout(fc2(dropout(gelu(fc1(x)))))`` as children ``0..4``; xavier weights, ``N(0, 1e-6)`` biases."""

    def __init__(self, dim: int, mlp_dim: int, dropout: float) -> None:
        super().__init__(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim),
                         nn.Dropout(dropout))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.normal_(m.bias, std=1e-6)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``y = x + attn(ln_1(x))``, ``y + mlp(ln_2(y))``."""

    def __init__(self, num_heads: int, dim: int, mlp_dim: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, num_heads, dropout=attention_dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, mlp_dim, dropout)

    def forward(self, x: Tensor) -> Tensor:
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        y = self.dropout(y) + x
        return y + self.mlp(self.ln_2(y))  # type: ignore[no-any-return]


class Encoder(nn.Module):
    """``ln(layers(dropout(x + pos_embedding)))`` over a ``(N, seq_length, dim)`` sequence."""

    def __init__(self, seq_length: int, num_layers: int, num_heads: int, dim: int, mlp_dim: int,
                 dropout: float = 0.0, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(num_heads, dim, mlp_dim, dropout, attention_dropout))
            for i in range(num_layers)))
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))  # type: ignore[no-any-return]


class VisionTransformer(nn.Module):
    """Patchify, prepend the class token, encode, classify the class token's final state."""

    def __init__(self, image_size: int = 224, patch_size: int = 16, num_layers: int = 12, num_heads: int = 12,
                 hidden_dim: int = 768, mlp_dim: int = 3072, num_classes: int = 1000) -> None:
        super().__init__()
        if image_size <= 0 or image_size % patch_size:
            raise ValueError(f"VisionTransformer: image_size={image_size} must be a positive multiple of the "
                             f"patch size {patch_size} (e.g. {max(patch_size, image_size // patch_size * patch_size)})")
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.conv_proj = nn.Conv2d(3, hidden_dim, kernel_size=patch_size, stride=patch_size)
        seq_length = (image_size // patch_size) ** 2 + 1
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.encoder = Encoder(seq_length, num_layers, num_heads, hidden_dim, mlp_dim)
        self.seq_length = seq_length
        head = nn.Linear(hidden_dim, num_classes)
        self.heads = nn.Sequential(OrderedDict([("head", head)]))
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1.0 / (3 * patch_size**2)))  # 1 / fan-in
        nn.init.zeros_(self.conv_proj.bias)  # type: ignore[arg-type]
        nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)

    def _process_input(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        p = self.patch_size
        torch._assert(h == self.image_size, f"VisionTransformer: input height {h} != image_size {self.image_size}; "
                                            "build the model with image_size equal to the input side")
        torch._assert(w == self.image_size, f"VisionTransformer: input width {w} != image_size {self.image_size}; "
                                            "build the model with image_size equal to the input side")
        x = self.conv_proj(x)  # (N, hidden, H/p, W/p)
        x = x.reshape(n, self.hidden_dim, (h // p) * (w // p))
        return x.permute(0, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self._process_input(x)
        token = self.class_token.expand(x.shape[0], -1, -1)
        x = self.encoder(torch.cat([token, x], dim=1))
        return self.heads(x[:, 0])  # type: ignore[no-any-return]


def vit_b_16(num_classes: int = 1000, image_size: int = 224) -> VisionTransformer:
    """ViT-B/16: 12 layers, 12 heads, width 768, MLP 3072 (86,567,656 parameters at 224x224, 1000 classes)."""
    return VisionTransformer(image_size, 16, 12, 12, 768, 3072, num_classes)
