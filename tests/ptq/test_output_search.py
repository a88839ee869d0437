"""ptq.output_search: search_layer_output takes an OutputSearchConfig or its fields as keywords."""

from __future__ import annotations

import pytest
import torch

from requant_plugin.options import PerTensor, Rounding
from requant_plugin.ptq.output_search import OutputSearchConfig, search_layer_output


def test_config_and_keywords_agree() -> None:
    torch.manual_seed(2)
    w = torch.randn(6, 12)
    x = torch.randn(300, 12).double()
    g = (x.T @ x / 300).numpy()
    cfg = OutputSearchConfig(granularity=PerTensor(), rounding=Rounding.FEEDBACK, symmetric=True)
    a = search_layer_output(w, g, 3, cfg)
    b = search_layer_output(w, g, 3, per_channel=False, rounding="feedback", symmetric=True)
    assert torch.equal(a.weight, b.weight) and a.output_mse == b.output_mse
    assert not a.estimate.per_channel
    with pytest.raises(ValueError, match="unknown rounding 'up'"):
        search_layer_output(w, g, 3, rounding="up")
    with pytest.raises(ValueError, match="bits=9 is not supported"):
        search_layer_output(w, g, 9)
    with pytest.raises(ValueError, match=r"unknown feedback_order 'random'.*'energy'"):
        OutputSearchConfig(feedback_order="random")
