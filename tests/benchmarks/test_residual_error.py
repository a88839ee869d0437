"""The shortcut-quantization benchmark: the traced model's other readers of a layer input read it
fake-quantized, the layer itself and the float outputs elsewhere are untouched."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.residual_error import with_shortcuts
from requant_plugin.ptq.activation_sim import ActQParams
from requant_plugin.range.fake_quant import fake_quant_per_tensor


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


def test_the_shortcut_reads_the_fake_quantized_input() -> None:
    torch.manual_seed(0)
    block = Block().eval()
    x = torch.rand(3, 2, 4, 4) * 3
    qp = ActQParams(scale=0.25, zero_point=0, quant_min=0, quant_max=15, alpha=1.0)
    traced = with_shortcuts(block, {"conv": qp})
    xq = fake_quant_per_tensor(x, 0.25, 0, 0, 15)
    assert not torch.equal(xq, x)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), block.conv(x) + xq)  # the conv still reads the float input
        plain = nn.Sequential(block.conv)  # the layer is its input's only reader: nothing changes
        assert torch.equal(with_shortcuts(plain, {"0": qp})(x), plain(x))
    assert traced.conv is block.conv  # hooks registered on the model's layers still run
