"""``feedback_refit``: after the feedback rounding each channel's grid is scaled by the least-squares factor
of its codes. Reference: the same rounding without the refit (same codes, checked by dividing by the
grids), the closed-form factor of :func:`requant_plugin.core.refit.refit_scale`, and a dense scan of the
factor (no factor of the scan beats the refitted weight); the returned grid holds the returned weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from refs.layers import relu_layer

from requant_plugin.core.output_objective import output_mse
from requant_plugin.ptq import RECIPES, QuantizeConfig, quantize_weights
from requant_plugin.ptq.output_search import (
    OutputSearchConfig,
    refit_rounding,
    search_layer_output,
    widened_feedback_round,
)

FACTORS = (1.0, 1.2, 1.5)


def _layer(seed: int, c: int = 6, n: int = 12, groups: int = 1) -> tuple[torch.Tensor, np.ndarray]:
    return relu_layer(seed, c, n, groups)


def _codes(w: torch.Tensor, est) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The integer codes of ``w`` on the uniform grid of ``est`` (rows: output channels)."""
    s = est.scale.double().reshape(-1, 1).numpy() if est.per_channel else float(est.scale)
    z = est.zero_point.double().reshape(-1, 1).numpy() if est.per_channel else float(est.zero_point)
    return w.double().numpy() / s + z


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([2, 3, 4]), symmetric=st.booleans(),
       per_channel=st.booleans(), groups=st.sampled_from([1, 2]), widen=st.booleans())
def test_refit_keeps_the_codes_and_lowers_the_error_to_the_best_scale(
    seed: int, bits: int, symmetric: bool, per_channel: bool, groups: int, widen: bool,
) -> None:
    w, g = _layer(seed, groups=groups)
    est = search_layer_output(w, g, bits, symmetric=symmetric, per_channel=per_channel).estimate
    factors = FACTORS if widen else (1.0,)
    base, base_grid, _ = widened_feedback_round(w, g, est, factors)
    got, grid, err = refit_rounding(w, g, widened_feedback_round(w, g, est, factors))
    w2 = w.double().numpy()
    before, after = output_mse(w2, base.double().numpy(), g), output_mse(w2, got.double().numpy(), g)
    np.testing.assert_allclose(err, after, rtol=1e-5)  # the returned errors are the returned weight's
    if per_channel:  # float32 weights: up to float32 rounding where lambda is 1 to within it
        assert np.all(after <= before * (1 + 1e-6) + 1e-15)
    else:
        assert after.sum() <= before.sum() * (1 + 1e-6) + 1e-15
        assert grid.scale.dim() == 0
    # the same integer codes, on the returned grid, which holds the returned weight
    codes = _codes(got, grid)
    np.testing.assert_allclose(codes, np.rint(codes), atol=1e-6)
    np.testing.assert_allclose(codes, _codes(base, base_grid), atol=1e-6)
    assert codes.min() >= grid.quant_min - 1e-6 and codes.max() <= grid.quant_max + 1e-6
    torch.testing.assert_close(grid.fake_quantize(got), got, rtol=1e-6, atol=1e-7)
    assert torch.equal(grid.zero_point, base_grid.zero_point)
    ratio = (grid.scale / base_grid.scale).double()
    for ours, theirs in ((grid.clip_min, base_grid.clip_min), (grid.clip_max, base_grid.clip_max)):
        torch.testing.assert_close(ours, theirs * ratio.to(theirs.dtype))
    # no factor of a dense scan does better than the refitted scale (per channel: channel by channel)
    scan = np.stack([output_mse(w2, t * base.double().numpy(), g) for t in np.linspace(0.5, 2.0, 601)])
    best = scan.min(axis=0) if per_channel else scan.sum(axis=1).min()
    assert np.all((after if per_channel else after.sum()) <= best * (1 + 1e-6) + 1e-12)


def test_the_refit_moves_a_coarse_rounding_and_the_search_takes_the_option() -> None:
    w, g = _layer(1, 16, 24)
    plain = search_layer_output(w, g, 2, OutputSearchConfig(rounding="feedback"))
    refit = search_layer_output(w, g, 2, OutputSearchConfig(rounding="feedback", feedback_refit=True))
    assert refit.output_mse < plain.output_mse  # seeded: at 2 bits the fitted scale differs from the searched one
    assert not torch.equal(refit.estimate.scale, plain.estimate.scale)


def test_quantize_weights_option_and_report() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 16, 5)).eval()
    data = [torch.randn(16, 3, 6, 6, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    _, ra = quantize_weights(net, "beyond", bits=2, calibration_data=data, feedback_refit=False)
    qb, rb = quantize_weights(net, "beyond", bits=2, calibration_data=data)  # on in the weights-only recipe
    assert not RECIPES["beyond-tensorrt"].feedback_refit and not RECIPES["beyond-codebook"].feedback_refit
    assert ra.settings["feedback_refit"] is False and rb.settings["feedback_refit"] is True
    assert rb["0"].output_mse <= ra["0"].output_mse * (1 + 1e-9)
    for name in ("0", "3"):  # the written weight lies on the reported grid
        layer = qb.get_submodule(name)
        torch.testing.assert_close(rb[name].estimate.fake_quantize(layer.weight), layer.weight, rtol=1e-6, atol=1e-7)
    # unused with nearest rounding (a recipe's refit stays harmless when the user changes the rounding)
    qn, _ = quantize_weights(net, "beyond", bits=2, calibration_data=data, rounding="nearest", feedback_refit=True)
    qm, _ = quantize_weights(net, "beyond", bits=2, calibration_data=data, rounding="nearest", feedback_refit=False)
    for a, b in zip(qn.parameters(), qm.parameters(), strict=True):
        assert torch.equal(a, b)


def test_refit_without_the_feedback_rounding_is_refused_where_it_would_be_ignored() -> None:
    with pytest.raises(ValueError, match="rounding='feedback'"):
        OutputSearchConfig(feedback_refit=True)
    for make in (QuantizeConfig, OutputSearchConfig):
        with pytest.raises(ValueError, match="feedback_refit must be True or False"):
            make(rounding="feedback", feedback_refit="yes")  # type: ignore[arg-type]
