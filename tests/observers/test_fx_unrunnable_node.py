"""convert_fx graphs that torch's int8 kernels cannot run fail in ``quantize_fx`` with the node and
the fix named (torch alone raises a bare "required rank 4 tensor to use channels_last format" at the
user's first forward), and the rewrite the message suggests does run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from requant_plugin import get_requant_qconfig_mapping
from requant_plugin.observers.flows import default_mapping, quantize_fx


class MeanHead(nn.Module):
    """conv -> BN -> ReLU -> global mean -> fc on a 1x1 feature map (ShuffleNetV2's head at 32 px)."""

    def __init__(self, keepdim: bool) -> None:
        super().__init__()
        self.keepdim = keepdim
        self.conv = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = y.mean([2, 3], keepdim=True).flatten(1) if self.keepdim else y.mean([2, 3])
        return self.fc(y)


@pytest.mark.parametrize("requant", [False, True], ids=["torch-default", "requant"])
def test_unrunnable_node_is_named_with_the_fix(requant: bool) -> None:
    torch.manual_seed(0)
    mapping = get_requant_qconfig_mapping() if requant else default_mapping("x86")
    cal = [torch.randn(4, 16, 1, 1)]
    with pytest.raises(RuntimeError, match=r"node 'mean'.*output of module 'conv.0'.*keepdim=True.*quantize_pt2e"):
        quantize_fx(MeanHead(keepdim=False).eval(), mapping, cal, "x86")
    q, _ = quantize_fx(MeanHead(keepdim=True).eval(), mapping, cal, "x86")
    assert q(cal[0]).shape == (4, 4)
