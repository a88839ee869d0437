"""``feedback_sweeps``: coordinate descent after the (widened) feedback rounding, through
``widened_feedback_round``, ``search_layer_output`` and ``quantize_weights``.

Reference: the same rounding without sweeps; the sweeps may only lower each channel's
``e_c^T G e_c`` and must keep every weight on the returned grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from requant_plugin.core.output_objective import output_mse
from requant_plugin.ptq import QuantizeConfig, quantize_weights
from requant_plugin.ptq.output_search import OutputSearchConfig, search_layer_output, widened_feedback_round

FACTORS = (1.0, 1.2, 1.5)


def _layer(seed: int, c: int, n: int, groups: int) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, n, generator=g) * torch.rand(c, 1, generator=g)
    grams = []
    for _ in range(groups):
        x = torch.relu(torch.randn(300, n, generator=g)).double() + 0.1 * torch.randn(300, n, generator=g).double()
        grams.append((x.T @ x / 300).numpy())
    return w, (grams[0] if groups == 1 else np.stack(grams))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([2, 3, 4]), groups=st.sampled_from([1, 2]),
       per_channel=st.booleans(), p=st.sampled_from([1.0, 0.5]))
def test_sweeps_lower_every_channels_error_on_the_same_grid(
    seed: int, bits: int, groups: int, per_channel: bool, p: float,
) -> None:
    w, g = _layer(seed, 6, 12, groups)
    est = search_layer_output(w, g, bits, per_channel=per_channel, p=p).estimate
    base, base_grid, _ = widened_feedback_round(w, g, est, FACTORS)
    got, grid, err = widened_feedback_round(w, g, est, FACTORS, sweeps=3)
    w2 = w.double().numpy()
    before, after = output_mse(w2, base.double().numpy(), g), output_mse(w2, got.double().numpy(), g)
    assert np.all(after <= before * (1 + 1e-9) + 1e-15)
    np.testing.assert_allclose(err, after, rtol=1e-5)  # the returned errors are the returned weight's
    torch.testing.assert_close(grid.scale, base_grid.scale)  # the widened grid kept, the codes refined
    torch.testing.assert_close(grid.fake_quantize(got), got, rtol=1e-6, atol=1e-7)


def test_search_and_quantize_weights_take_the_option() -> None:
    w, g = _layer(1, 16, 24, 1)
    plain = search_layer_output(w, g, 2, OutputSearchConfig(rounding="feedback"))
    swept = search_layer_output(w, g, 2, OutputSearchConfig(rounding="feedback", feedback_sweeps=4))
    assert swept.output_mse < plain.output_mse  # seeded: the sweeps move some 2-bit weight
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 16, 5)).eval()
    data = [torch.randn(16, 3, 6, 6, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    _, ra = quantize_weights(net, "beyond", bits=2, calibration_data=data, feedback_sweeps=0)
    _, rb = quantize_weights(net, "beyond", bits=2, calibration_data=data, feedback_sweeps=4)
    assert ra.settings["feedback_sweeps"] == 0 and rb.settings["feedback_sweeps"] == 4
    assert rb["0"].output_mse <= ra["0"].output_mse * (1 + 1e-9)


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True, None])
def test_bad_sweeps_are_refused_with_the_option_name(bad: object) -> None:
    with pytest.raises(ValueError, match="feedback_sweeps"):
        QuantizeConfig(feedback_sweeps=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="feedback_sweeps"):
        OutputSearchConfig(feedback_sweeps=bad)  # type: ignore[arg-type]
