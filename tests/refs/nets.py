"""Small networks and calibration batches shared by several test modules.

* :class:`Net` / :func:`make_net` / :data:`CALIB`: conv -> BN -> relu -> conv -> relu -> mean -> fc, with
  non-trivial BN statistics, for the torch.ao FX and torchao pt2e flows on users' models;
* :func:`make_seq_net` / :data:`DATA`: the BN-free ``nn.Sequential`` of the weights-only PTQ tests;
* :func:`make_seq_bn_net`: the same with a BN after each conv (statistics left to the caller).

Every builder seeds torch's global generator (``torch.manual_seed(0)``) first, so each call gives
the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CALIB", "DATA", "Net", "make_net", "make_seq_bn_net", "make_seq_net"]


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
