"""A ``quantize_weights`` result (``recipe="beyond-tensorrt"``) carried through torchao pt2e:
``get_requant_quantizer(weight_ranges=report)`` pins each layer's symmetric grid and the
converted graph's int8 weight constants are exactly the chosen codes.

References: the weight-quantized float model's own weights, and the dequantize nodes torchao
writes (codes * scales must reproduce them).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")

from refs.nets import PoolNet as Net
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

from requant_plugin import quantize_weights
from requant_plugin.pt2e import PinnedWeightObserver, get_requant_quantizer

CALIB = [torch.randn(8, 3, 10, 10, generator=torch.Generator().manual_seed(i)) for i in range(3)]


def _counts(q: torch.fx.GraphModule) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in q.graph.nodes:
        if "quantized_decomposed" in str(n.target):
            key = str(n.target).split(".")[-2]
            out[key] = out.get(key, 0) + 1
    return out


def _quantize(model: nn.Module, quantizer) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule]:
    ep = torch.export.export(model, (CALIB[0],))
    prepared = prepare_pt2e(ep.module(), quantizer)
    with torch.no_grad():
        for x in CALIB:
            prepared(x)
    return prepared, convert_pt2e(prepared)


@pytest.mark.parametrize("backend", ["x86_inductor", "xnnpack"])
def test_graph_weights_are_the_chosen_codes(backend: str) -> None:
    torch.manual_seed(0)
    qmodel, rep = quantize_weights(Net().eval(), 4, recipe="beyond-tensorrt", calibration_data=CALIB)
    prepared, q = _quantize(qmodel, get_requant_quantizer(4, 8, backend=backend, weight_ranges=rep))
    pinned = [m for m in prepared.modules() if isinstance(m, PinnedWeightObserver)]
    assert sorted(m.layer for m in pinned) == sorted(x.name for x in rep.layers)
    _, plain = _quantize(qmodel, get_requant_quantizer(4, 8, backend=backend))
    assert _counts(q) == _counts(plain)  # annotated exactly as without weight_ranges
    deq = []
    for node in q.graph.nodes:
        if "quantized_decomposed.dequantize_per_channel." in str(node.target):
            codes = getattr(q, node.args[0].target)
            scale = getattr(q, node.args[1].target)
            assert codes.dtype == torch.int8 and int(codes.min()) >= -8 and int(codes.max()) <= 7
            deq.append(codes.double() * scale.double().reshape((-1,) + (1,) * (codes.dim() - 1)))
    assert len(deq) == 3
    for layer in rep.layers:
        w = qmodel.get_submodule(layer.name).weight.detach().double()
        match = [d for d in deq if d.shape == w.shape and torch.allclose(d, w, rtol=1e-6, atol=1e-7)]
        assert len(match) == 1, layer.name


def test_asymmetric_grids_are_refused() -> None:
    torch.manual_seed(0)
    _, rep = quantize_weights(Net().eval(), 4, recipe="beyond", calibration_data=CALIB)
    with pytest.raises(ValueError, match="beyond-tensorrt"):
        get_requant_quantizer(4, 8, weight_ranges=rep)
