"""Building blocks shared by the architecture families (our own code, torchvision's module layout).

``ConvBNAct`` is a ``Sequential`` of ``conv, norm, act`` (children ``0``, ``1``, ``2``) so that
state-dict keys read like torchvision's ``Conv2dNormActivation`` (``features.0.0.weight``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["ConvBNAct", "Permute", "SqueezeExcitation", "StochasticDepth", "init_weights", "make_divisible"]

Factory = Callable[..., nn.Module]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (at least ``min_value``), never below ``0.9 v``."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNAct(nn.Sequential):
    """``act(norm(conv(x)))``; padding ``(k - 1) // 2`` ("same" for odd kernels), conv bias only without norm."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: Factory | None = nn.ReLU, norm: Factory | None = nn.BatchNorm2d) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups,
                                             bias=norm is None)]
        if norm is not None:
            layers.append(norm(cout))
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout


class SqueezeExcitation(nn.Module):
    """``x * gate(fc2(act(fc1(mean_hw(x)))))``: per-channel gating from the global average (Hu et al. 2018)."""

    def __init__(self, channels: int, squeeze: int, act: Factory = nn.ReLU, gate: Factory = nn.Sigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = act()
        self.scale_activation = gate()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x  # type: ignore[no-any-return]


class StochasticDepth(nn.Module):
    """Training: ``x * Bernoulli(1 - p) / (1 - p)`` per sample ("row") or per batch; eval: identity."""

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0 or mode not in ("row", "batch"):
            raise ValueError(f"StochasticDepth: need 0 <= p <= 1 and mode 'row' or 'batch', got p={p}, mode={mode!r}")
        self.p = p
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        shape = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


class Permute(nn.Module):
    """``x.permute(*dims)`` as a module (ConvNeXt moves channels last for LayerNorm and Linear)."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = list(dims)

    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


def init_weights(model: nn.Module, linear_std: float = 0.01,
                 conv_mode: Literal["fan_in", "fan_out"] = "fan_in") -> nn.Module:
    """Kaiming-normal (ReLU gain) convs, zero biases, norms ``weight=1, bias=0``, Linear ``N(0, std^2)``.

    Fan-in keeps activation scale roughly constant through ``conv -> BN(eval, fresh stats) -> ReLU``
    (fan-out, torchvision's usual choice, counts ``k^2 * out`` and so shrinks depthwise convs by their
    width), so random-weight networks give non-degenerate activations at every depth.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=conv_mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
