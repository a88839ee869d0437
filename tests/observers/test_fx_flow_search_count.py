"""Issue 17: the REQuant FX flow runs each search once -- no weight search during calibration,
one per weight at ``convert_fx`` (torch.ao builds each weight observer there), and one alpha
search per activation histogram however often ``calculate_qparams`` is asked."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from requant_plugin.calib.histogram import HistogramCalibrator
from requant_plugin.calib.weight import WeightCalibrator
from requant_plugin.core import StreamingHistogram
from requant_plugin.qconfig import get_requant_qconfig_mapping
from requant_plugin.zoo.small_cnn import SmallCNN


def _count(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[int]:
    calls = [0]
    original = getattr(cls, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(cls, name, counted)
    return calls


def test_each_weight_and_histogram_is_searched_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.manual_seed(0)
    torch.backends.quantized.engine = "x86"
    model = SmallCNN(3, 10, 16, width=8).eval()
    weighted = sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())
    batches = [torch.randn(2, 3, 16, 16) for _ in range(3)]
    weight_searches = _count(monkeypatch, WeightCalibrator, "_observe")
    hist_searches = _count(monkeypatch, StreamingHistogram, "estimate")
    prepared = prepare_fx(copy.deepcopy(model), get_requant_qconfig_mapping(), (batches[0],))
    with torch.no_grad():
        for x in batches:
            prepared(x)
    assert weight_searches[0] == 0  # FX observes weights at convert only, never per calibration batch
    assert hist_searches[0] == 0  # the activation search waits for calculate_qparams
    acts = [m for m in prepared.modules() if isinstance(getattr(m, "calibrator", None), HistogramCalibrator)]
    assert acts
    first = [acts[0].calculate_qparams() for _ in range(3)]
    assert hist_searches[0] == 1 and all(torch.equal(first[0][0], s) for s, _ in first)
    convert_fx(prepared)
    assert weight_searches[0] == weighted  # one search per weight
    assert hist_searches[0] == len(acts)  # one per histogram (the first one's cached result reused)


@pytest.mark.parametrize("flow", ["fx", "pt2e"])
def test_refinement_searches_each_histogram_once(monkeypatch: pytest.MonkeyPatch, flow: str) -> None:
    """``refine_activation_ranges`` converts about ten copies of the prepared model; each copy reuses
    the alpha its observer found before the first copy (about 10x fewer searches, same ranges)."""
    from requant_plugin.refine import activation_observers, refine_activation_ranges

    torch.manual_seed(0)
    torch.backends.quantized.engine = "x86"
    model = SmallCNN(3, 10, 16, width=8).eval()
    batches = [torch.randn(2, 3, 16, 16) for _ in range(3)]
    if flow == "fx":
        from torch.ao.quantization.quantize_fx import prepare_fx

        prepared = prepare_fx(copy.deepcopy(model), get_requant_qconfig_mapping(act_bits=4), (batches[0],))
    else:
        pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

        from requant_plugin.pt2e import get_requant_quantizer

        exported = torch.export.export(copy.deepcopy(model), (batches[0],)).module()
        prepared = prepare_pt2e(exported, get_requant_quantizer(8, 4))
    with torch.no_grad():
        for x in batches:
            prepared(x)
    acts = activation_observers(prepared)
    alphas_before = {n: copy.deepcopy(m).calculate_qparams() for n, m in acts.items()}  # searched in copies
    hist_searches = _count(monkeypatch, StreamingHistogram, "estimate")
    res = refine_activation_ranges(prepared, model, batches, flow=flow)
    assert res.evaluations >= 5
    assert hist_searches[0] == len(acts)  # once per observer, not once per converted copy
    for n, m in acts.items():  # the same searched ranges, scaled by the chosen factor
        scale, _ = m.calculate_qparams()
        assert float(scale) == pytest.approx(res.factor * float(alphas_before[n][0]), rel=1e-5)
    assert hist_searches[0] == len(acts)  # asking the refined observers again searches nothing either
