"""Shared weights through the FX and pt2e flows (``requant_plugin.observers.untie``).

Reference: the float model. Before the fix, ``prepare_pt2e`` folded both BatchNorms of a conv called
twice (or of two convs sharing one weight) into the one tensor (W8A8 output error 100 % / 89 % of the
output's scale) and ``prepare_fx`` ran the second call with the first call's fused BatchNorm (30 %).
"""

from __future__ import annotations

import copy

import pytest
import torch
from refs.nets import Net, Reused, SharedBN, Tied
from torch import nn

pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")

from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

from requant_plugin import get_requant_qconfig_mapping
from requant_plugin.observers.flows import quantize_fx, quantize_pt2e
from requant_plugin.observers.untie import unshare_reused_layers
from requant_plugin.pt2e import get_requant_quantizer, untie_graph_weights

CAL = [torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
X = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(9))


def _model(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


@torch.no_grad()
def _error(q: nn.Module, ref: nn.Module) -> float:
    """Max output error relative to the float output's largest magnitude."""
    y = ref(X)
    return float((q(X) - y).abs().max() / y.abs().max())


@pytest.mark.parametrize("cls", [Reused, Tied, SharedBN])
def test_pt2e_w8a8_on_shared_weights_stays_close_to_float(cls: type[nn.Module]) -> None:
    m = _model(cls)
    before = copy.deepcopy(m.state_dict())
    q, _ = quantize_pt2e(m, get_requant_quantizer(8, 8), CAL)
    assert _error(q, m) < 0.02
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize(("cls", "copies"), [(Reused, 2), (Tied, 1)])
def test_untie_graph_weights_before_prepare_pt2e(cls: type[nn.Module], copies: int) -> None:
    """The helper for users who call ``prepare_pt2e`` themselves: one copy per extra call of each
    shared tensor (the reused conv: weight and bias; the tied convs: the weight), same outputs; then
    torchao's own prepare/convert stays close to float."""
    m = _model(cls)
    batch = torch.export.Dim("batch", min=1)
    graph = torch.export.export(copy.deepcopy(m), (CAL[0],), dynamic_shapes={"x": {0: batch}}).module()
    assert untie_graph_weights(graph) == copies
    assert untie_graph_weights(graph) == 0  # nothing left to untie
    with torch.no_grad():
        torch.testing.assert_close(graph(X), m(X), rtol=0, atol=0)
    prepared = prepare_pt2e(graph, get_requant_quantizer(8, 8))
    with torch.no_grad():
        for x in CAL:
            prepared(x)
    assert _error(convert_pt2e(prepared), m) < 0.02


@pytest.mark.parametrize("cls", [Reused, Tied, SharedBN])
def test_fx_w8a8_on_shared_weights_stays_close_to_float(cls: type[nn.Module]) -> None:
    m = _model(cls)
    q, _ = quantize_fx(m, get_requant_qconfig_mapping(), CAL)
    assert _error(q, m) < 0.03


def test_unshare_reused_layers_copies_only_reused_convs_before_batchnorm() -> None:
    m = _model(Reused)
    gm = unshare_reused_layers(m)
    assert isinstance(gm, torch.fx.GraphModule) and hasattr(gm, "conv_call1")
    assert gm.conv_call1.weight is not m.conv.weight and torch.equal(gm.conv_call1.weight, m.conv.weight)
    with torch.no_grad():
        torch.testing.assert_close(gm(X), m(X), rtol=0, atol=0)
    plain = Net().eval()
    assert unshare_reused_layers(plain) is plain
