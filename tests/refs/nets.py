"""Small networks and calibration batches shared by several test modules.

* :class:`Net` / :func:`make_net` / :data:`CALIB`: conv -> BN -> relu -> conv -> relu -> mean -> fc, with
  non-trivial BN statistics, for the torch.ao FX and torchao pt2e flows on users' models;
* :class:`PoolNet`: conv -> relu -> conv -> relu -> adaptive average pool -> flatten -> fc, for the
  pt2e graphs whose classifier reads pooled features;
* :func:`make_seq_net` / :data:`DATA`: the BN-free ``nn.Sequential`` of the weights-only PTQ tests;
* :func:`make_seq_bn_net`: the same with a BN after each conv (statistics left to the caller);
* :func:`make_depthwise_net` / :func:`random_batches`: conv/BN/ReLU with depthwise convolutions and
  random BN statistics (seeded by the caller), and seeded random 12x12 batches, for the
  quantized-input tests;
* :class:`Reused` / :class:`Tied` / :class:`SharedBN`: a conv called twice with a BatchNorm after each
  call, two convs sharing one weight tensor with their own BatchNorms, one BatchNorm after two convs
  (random BN statistics), for BatchNorm folding and the flows on shared weights;
* :class:`UpNet`: conv -> ReLU -> ConvTranspose (1-D or 2-D) -> conv, for the FX lowering of transposed
  convolutions;
* :class:`Unused`: two Linear(3, 3) of which the forward calls ``used`` only (``extra`` never runs).

Every builder seeds torch's global generator (``torch.manual_seed(0)``) first, so each call gives
the same weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from requant_plugin.ptq.activation_sim import ActQParams

__all__ = ["CALIB", "DATA", "Net", "PoolNet", "Reused", "SharedBN", "Tied", "Unused", "UpNet", "make_depthwise_net",
           "make_net",
           "make_seq_bn_net", "make_seq_net", "random_batches"]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.conv2(y))
        return self.fc(y.mean((2, 3)))


class PoolNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))


def make_net() -> nn.Module:
    """A :class:`Net` in eval mode, seed 0, BN running statistics drawn away from (0, 1)."""
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    return model.eval()


CALIB = [torch.randn(8, 3, 10, 10, generator=torch.Generator().manual_seed(i)) for i in range(3)]
"""Three calibration batches for :func:`make_net` (8 x 3 x 10 x 10, seeds 0..2)."""


def make_seq_net() -> nn.Module:
    """conv 3->8, relu, conv 8->8, relu, pool, flatten, linear 8->4 (layers "0", "2", "6"), eval, seed 0."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()


DATA = [torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
"""Two calibration batches for :func:`make_seq_net` (8 x 3 x 8 x 8, seeds 0 and 1)."""


def make_seq_bn_net() -> nn.Sequential:
    """conv 3->8, BN, relu, conv 8->8 (no bias), BN, relu, pool, flatten, linear 8->4, seed 0.

    In training mode, with BN at its initial statistics: the caller sets the statistics (drawing
    from torch's global generator right after this call, if it wants) and calls ``.eval()``."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


def make_depthwise_net(seed: int) -> nn.Module:
    """conv/BN/ReLU, then three (conv/BN/ReLU, depthwise conv/ReLU), pool, fc; random BN statistics."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                   nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)]
    m = nn.Sequential(*layers)
    with torch.no_grad():  # non-trivial BN statistics
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def random_batches(seed: int, batches: int = 4) -> list[torch.Tensor]:
    """``batches`` seeded standard-normal batches of 16 images, 3 x 12 x 12."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 3, 12, 12, generator=g) for _ in range(batches)]


def _random_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    return bn


class Reused(nn.Module):
    """One conv called twice, each call followed by its own BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1, self.bn2 = _random_bn(nn.BatchNorm2d(8)), _random_bn(nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.bn1(self.conv(x)))
        x = F.relu(self.bn2(self.conv(x)))
        return self.fc(x.mean((2, 3)))


class Tied(nn.Module):
    """Two convs sharing one weight tensor, each followed by its own BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.b.weight = self.a.weight
        self.bn1, self.bn2 = _random_bn(nn.BatchNorm2d(8)), _random_bn(nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.bn1(self.a(x)))
        x = F.relu(self.bn2(self.b(x)))
        return self.fc(x.mean((2, 3)))


class SharedBN(nn.Module):
    """One BatchNorm after two different convs (each called once)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.bn = _random_bn(nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.a(x)))
        x = F.relu(self.bn(self.b(x)))
        return self.fc(x.mean((2, 3)))


class UpNet(nn.Module):
    """conv -> ReLU -> ConvTranspose (``dims`` 1 or 2) -> conv, a decoder-style upsampling block."""

    def __init__(self, dims: int = 2) -> None:
        super().__init__()
        conv, tconv = (nn.Conv1d, nn.ConvTranspose1d) if dims == 1 else (nn.Conv2d, nn.ConvTranspose2d)
        self.c = conv(3, 8, 3, padding=1)
        self.t = tconv(8, 4, 4, stride=2, padding=1)
        self.o = conv(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(self.t(torch.relu(self.c(x))))  # type: ignore[no-any-return]


def residual_integer_logits(q: nn.Module, qps: dict[str, ActQParams], x: torch.Tensor) -> torch.Tensor:
    """The W/A network as an integer graph computes it, written out: each tensor a layer reads is quantized
    once on that layer's input range and the skip adds the quantized block input."""
    h = torch.relu(q.stem(qps["stem"].quantize(x)))
    for i, b in enumerate(q.blocks):
        xq = qps[f"blocks.{i}.conv1"].quantize(h)
        r = torch.relu(b.conv1(xq))
        h = torch.relu(b.conv2(qps[f"blocks.{i}.conv2"].quantize(r)) + xq)
    return q.fc(qps["fc"].quantize(h.mean((2, 3))))  # type: ignore[no-any-return]


class Residual(nn.Module):
    """A stem and ReLU residual blocks ``relu(conv2(relu(conv1(x))) + x)``, a pooled Linear head."""

    def __init__(self, c: int = 8, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.ModuleList(nn.ModuleDict({"conv1": nn.Conv2d(c, c, 3, padding=1),
                                                   "conv2": nn.Conv2d(c, c, 3, padding=1)}) for _ in range(blocks))
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        for b in self.blocks:
            h = torch.relu(b.conv2(torch.relu(b.conv1(h))) + h)
        return self.fc(h.mean((2, 3)))  # type: ignore[no-any-return]


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used, self.extra = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)
