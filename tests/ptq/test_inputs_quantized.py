"""``inputs="quantized"``: each layer is matched to the float layer's output from the partly
quantized model's inputs, which compensates the upstream error at low bit widths."""

from __future__ import annotations

import pytest
import torch
from refs.nets import make_depthwise_net as model
from refs.nets import random_batches as data
from torch import nn

from requant_plugin import quantize_weights
from requant_plugin.ptq.config import AUTO_ROWS


def output_error(ref: nn.Module, q: nn.Module, xs: list[torch.Tensor]) -> float:
    with torch.no_grad():
        return float(sum(((ref(x) - q(x)) ** 2).mean() for x in xs) / len(xs))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantized_inputs_lower_the_network_output_error_at_2_bits(seed: int) -> None:
    m, cal, held_out = model(seed), data(seed), data(seed + 100)
    before = [p.detach().clone() for p in m.parameters()]
    err = {}
    for inputs in ("float", "quantized"):
        # the inputs mode alone: the feedback rounding on the searched grid only (no widened candidates, no
        # refit), the same 8,192 sampled rows as at 4 bits, the target's fixed damp (no cross-validation)
        q, rep = quantize_weights(m, 2, recipe="beyond", calibration_data=cal, inputs=inputs, feedback_widen=(1.0,),
                                  feedback_refit=False, calibration_rows=AUTO_ROWS, target_damp=0.01)
        assert rep.settings["inputs"] == inputs
        err[inputs] = output_error(m, q, held_out)
    assert err["quantized"] < err["float"], err
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))  # user's model untouched


def test_quantized_inputs_need_data() -> None:
    with pytest.raises(ValueError, match="inputs='quantized'"):
        quantize_weights(model(0), 4, recipe="paper", inputs="quantized")


def test_unknown_inputs_value_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"valid values are \['float', 'quantized'\]"):
        quantize_weights(model(0), 4, recipe="beyond", calibration_data=data(0), inputs="fake")
