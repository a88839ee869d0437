"""The shortcut-quantization benchmark: the traced model's other readers of a layer input read it
fake-quantized, the layer itself and the float outputs elsewhere are untouched."""

from __future__ import annotations

import pytest
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


class ResNetLet(nn.Module):
    """stem conv-ReLU, one residual block (conv-ReLU-conv + shortcut, ReLU), average pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1, self.conv2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))) + x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_the_strict_graph_is_the_simulation_with_the_4_bit_shortcut() -> None:
    """The strict W4A4 pt2e graph (x86) computes each layer input fake-quantized on its range and the
    residual add reading the block input at that same 4-bit range: ``with_shortcuts`` models it exactly,
    the layer-input-only simulation does not."""
    pytest.importorskip("torchao")
    from refs.graphs import layer_input_qparams

    from requant_plugin import quantize_weights
    from requant_plugin.observers.flows import quantize_pt2e
    from requant_plugin.pt2e import get_requant_quantizer
    from requant_plugin.ptq.activation_sim import fake_quant_activations

    torch.manual_seed(0)
    cal = [torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    qw, rep = quantize_weights(ResNetLet().eval(), 4, recipe="beyond-tensorrt", calibration_data=cal, act_bits=4)
    q = quantize_pt2e(qw, get_requant_quantizer(4, 4, weight_ranges=rep), cal, refine=False)[0]
    qp = layer_input_qparams(q)
    assert sorted(qp) == ["conv1", "conv2", "fc", "stem"]
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    with torch.no_grad(), fake_quant_activations(qw, qp):
        inputs_only, with_shortcut = qw(x), with_shortcuts(qw, qp)(x)
        graph = q(x)
    torch.testing.assert_close(graph, with_shortcut, rtol=1e-4, atol=1e-5)
    assert (graph - inputs_only).abs().max() > 1e-3
