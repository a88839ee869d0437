"""ptq.output_search.widened_feedback_round: feedback rounding on wider candidate grids, the best kept.

Reference: the core error feedback (:func:`error_feedback_round`) run on each candidate grid separately
(the estimate's scale times the factor), the per-channel (or per-tensor) minimum of ``e_c^T G e_c``
taken by hand. ``feedback_sweeps`` (coordinate descent on the kept rounding): against the same rounding
without sweeps, which they may only improve, on the same grid.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from refs.layers import relu_layer

from requant_plugin.core.output_objective import error_feedback_round, output_mse
from requant_plugin.options import PerChannel
from requant_plugin.ptq import QuantizeConfig, quantize_weights
from requant_plugin.ptq.output_search import (
    OutputSearchConfig,
    feedback_round,
    search_layer_output,
    widened_feedback_round,
)
from requant_plugin.ptq.recipes import FEEDBACK_WIDEN, RECIPES
from requant_plugin.ptq.weights import WIDEN_MIN_ROWS_PER_INPUT

FACTORS = (1.0, 1.2, 1.5)


def _layer(seed: int, c: int = 6, n: int = 10, groups: int = 1) -> tuple[torch.Tensor, np.ndarray]:
    return relu_layer(seed, c, n, groups)


def _small_net() -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """A seeded Conv-ReLU-Linear network and two calibration batches for it."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 16, 5)).eval()
    return net, [torch.randn(16, 3, 6, 6, generator=torch.Generator().manual_seed(i)) for i in range(2)]


def _reference(w: torch.Tensor, gram: np.ndarray, est, factors, per_channel: bool) -> torch.Tensor:
    """Each factor's grid rounded by the core error feedback, group by group, then the minimum by hand."""
    w2 = w.double().numpy()
    c = w2.shape[0]
    g = gram[None] if gram.ndim == 2 else gram
    per = c // g.shape[0]
    s = np.broadcast_to(est.scale.double().numpy().reshape(-1), (c,))
    z = np.broadcast_to(est.zero_point.double().numpy().reshape(-1), (c,))
    outs, errs = [], []
    for f in factors:
        out = np.empty_like(w2)
        for gi in range(g.shape[0]):
            sl = slice(gi * per, (gi + 1) * per)
            sf, zf = f * s[sl], z[sl]

            def quantize(_j: int, v: np.ndarray, sf: np.ndarray = sf, zf: np.ndarray = zf) -> np.ndarray:
                return sf * (np.clip(np.rint(v / sf) + zf, est.quant_min, est.quant_max) - zf)  # uniform grid

            out[sl] = error_feedback_round(w2[sl], g[gi], quantize, order="energy")
        e = w2 - out
        errs.append(np.array([e[i] @ g[i // per] @ e[i] for i in range(c)]))
        outs.append(out)
    err = np.stack(errs)
    pick = err.argmin(axis=0) if per_channel else np.full(c, err.sum(axis=1).argmin())
    return torch.as_tensor(np.stack([outs[k][i] for i, k in enumerate(pick)]), dtype=w.dtype)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([2, 3, 4]), symmetric=st.booleans(),
       per_channel=st.booleans())
def test_matches_the_per_candidate_reference(seed: int, bits: int, symmetric: bool, per_channel: bool) -> None:
    w, g = _layer(seed)
    est = search_layer_output(w, g, bits, symmetric=symmetric, per_channel=per_channel).estimate
    got, new, err = widened_feedback_round(w, g, est, FACTORS)
    torch.testing.assert_close(got, _reference(w, g, est, FACTORS, per_channel), rtol=0, atol=1e-12)
    # never worse than the searched range alone, channel by channel (per tensor: in total)
    base = output_mse(w.double().numpy(), feedback_round(w, g, est).double().numpy(), g)
    wide = output_mse(w.double().numpy(), got.double().numpy(), g)
    np.testing.assert_allclose(err, wide, rtol=1e-5)  # the returned errors are the returned weight's
    if per_channel:
        assert np.all(wide <= base * (1 + 1e-12) + 1e-15)
    else:
        assert wide.sum() <= base.sum() * (1 + 1e-12) + 1e-15
        assert new.scale.dim() == 0
    # the returned grid is the one the weight lies on, and its range is the chosen factor times the old
    torch.testing.assert_close(new.fake_quantize(got), got, rtol=1e-6, atol=1e-7)
    ratio = (new.scale / est.scale).double()
    assert all(any(abs(float(r) - f) < 1e-12 for f in FACTORS) for r in ratio.reshape(-1))
    torch.testing.assert_close(new.alpha / est.alpha, ratio.to(new.alpha.dtype))
    for ours, theirs in ((new.clip_min, est.clip_min), (new.clip_max, est.clip_max)):  # may be 0: no division
        torch.testing.assert_close(ours, theirs * ratio.to(theirs.dtype))
    assert torch.equal(new.zero_point, est.zero_point)


def test_one_factor_is_plain_feedback_rounding_bit_for_bit() -> None:
    w, g = _layer(3)
    est = search_layer_output(w, g, 3).estimate
    got, same, err = widened_feedback_round(w, g, est, (1.0,))
    assert torch.equal(got, feedback_round(w, g, est)) and same is est
    np.testing.assert_allclose(err, output_mse(w.double().numpy(), got.double().numpy(), g), rtol=1e-5)


def test_grouped_layers_use_each_groups_gram() -> None:
    w, g = _layer(5, c=8, n=9, groups=4)  # a grouped convolution: 2 output channels per group
    est = search_layer_output(w, g, 2).estimate
    got, new, _ = widened_feedback_round(w, g, est, FACTORS)
    torch.testing.assert_close(got, _reference(w, g, est, FACTORS, True), rtol=0, atol=1e-12)
    torch.testing.assert_close(new.fake_quantize(got), got, rtol=1e-6, atol=1e-7)


def test_the_search_returns_the_widened_grid() -> None:
    w, g = _layer(11, c=16, n=24)
    plain = search_layer_output(w, g, 2, rounding="feedback")
    wide = search_layer_output(w, g, 2, OutputSearchConfig(rounding="feedback", feedback_widen=FACTORS))
    assert wide.output_mse <= plain.output_mse * (1 + 1e-12)
    torch.testing.assert_close(wide.estimate.fake_quantize(wide.weight), wide.weight, rtol=1e-6, atol=1e-7)
    assert wide.estimate.granularity == PerChannel(0)


@pytest.mark.parametrize(("option", "bad"), [
    *[("feedback_widen", b) for b in [(0.9,), (1.0, float("nan")), (float("inf"),), "1.2", (True,), ("a",)]],
    *[("feedback_sweeps", b) for b in [-1, 1.5, "2", True, None]],
])
def test_bad_feedback_options_are_refused_with_the_option_name(option: str, bad: object) -> None:
    with pytest.raises(ValueError, match=option):
        QuantizeConfig(**{option: bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=option):
        OutputSearchConfig(**{option: bad})  # type: ignore[arg-type]


def test_factors_are_sorted_and_include_the_searched_range() -> None:
    assert QuantizeConfig(feedback_widen=(1.3, 1.1)).feedback_widen == (1.0, 1.1, 1.3)
    assert QuantizeConfig(feedback_widen=1.2).feedback_widen == (1.0, 1.2)
    assert RECIPES["beyond"].feedback_widen == FEEDBACK_WIDEN
    assert RECIPES["beyond-tensorrt"].feedback_widen == (1.0,)  # W/A deployments: the searched grid
    assert QuantizeConfig().feedback_widen == (1.0,)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, padding=1, groups=4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 36, 5)).eval()


def test_quantize_weights_recipe_widens_and_the_user_can_turn_it_off() -> None:
    data = [torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # the widening alone (the recipe's least-squares refit off: it rescales the chosen grids)
    qw, rw = quantize_weights(net, "beyond", bits=2, calibration_data=data, feedback_refit=False)
    _, ro = quantize_weights(net, "beyond", bits=2, calibration_data=data, feedback_widen=(1.0,), feedback_refit=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the user's model untouched
    assert rw.settings["feedback_widen"] == FEEDBACK_WIDEN and ro.settings["feedback_widen"] == (1.0,)
    for name in ("0", "2", "5"):
        est = rw[name].estimate
        assert est is not None
        wq = qw.get_submodule(name).weight.detach()
        torch.testing.assert_close(est.fake_quantize(wq), wq, rtol=1e-6, atol=1e-7)  # on the reported grid
    # the first layer sees the same inputs in both runs: its ranges differ by the chosen factors only
    ratio = (rw["0"].estimate.alpha / ro["0"].estimate.alpha).double().reshape(-1)
    assert all(min(abs(float(r) - f) for f in FEEDBACK_WIDEN) < 1e-9 for r in ratio)
    assert float(ratio.max()) > 1.0  # seeded: some channel of this 2-bit layer takes a wider grid


@pytest.mark.parametrize(("rows_per_batch", "widened"), [(4, False), (64, True)])
def test_wider_grids_need_enough_calibration_rows(rows_per_batch: int, widened: bool) -> None:
    # 16 inputs: 2 x 4 rows < WIDEN_MIN_ROWS_PER_INPUT * 16 keep the searched grid; 2 x 64 rows may widen
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 12)).eval()
    data = [torch.relu(torch.randn(rows_per_batch, 16, generator=torch.Generator().manual_seed(i))) for i in range(2)]
    assert (2 * rows_per_batch >= WIDEN_MIN_ROWS_PER_INPUT * 16) is widened
    qw, rw = quantize_weights(net, "beyond", bits=2, calibration_data=data, feedback_refit=False)
    qo, ro = quantize_weights(net, "beyond", bits=2, calibration_data=data, feedback_widen=(1.0,), feedback_refit=False)
    ratio = (rw["0"].estimate.alpha / ro["0"].estimate.alpha).double().reshape(-1)
    if widened:
        assert float(ratio.max()) > 1.0  # seeded: some channel takes a wider grid
    else:
        assert torch.equal(qw[0].weight, qo[0].weight) and bool((ratio == 1.0).all())


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


def test_search_and_quantize_weights_take_the_sweeps_option() -> None:
    w, g = _layer(1, 16, 24)
    plain = search_layer_output(w, g, 2, OutputSearchConfig(rounding="feedback"))
    swept = search_layer_output(w, g, 2, OutputSearchConfig(rounding="feedback", feedback_sweeps=4))
    assert swept.output_mse < plain.output_mse  # seeded: the sweeps move some 2-bit weight
    net, data = _small_net()
    _, ra = quantize_weights(net, "beyond", bits=2, calibration_data=data, feedback_sweeps=0)
    _, rb = quantize_weights(net, "beyond", bits=2, calibration_data=data, feedback_sweeps=4)
    assert ra.settings["feedback_sweeps"] == 0 and rb.settings["feedback_sweeps"] == 4
    assert rb["0"].output_mse <= ra["0"].output_mse * (1 + 1e-9)


def test_sweeps_or_widening_without_the_feedback_rounding_are_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="rounding='feedback'"):
        QuantizeConfig(feedback_sweeps=2)  # default rounding: nearest
    with pytest.raises(ValueError, match="rounding='feedback'"):
        OutputSearchConfig(feedback_sweeps=2)
    with pytest.raises(ValueError, match="rounding='feedback'"):
        OutputSearchConfig(feedback_widen=(1.0, 1.2))
    # a recipe's widening stays unused when the user changes its rounding: what the user writes wins
    net, data = _small_net()
    qa, report = quantize_weights(net, "beyond", bits=2, calibration_data=data, rounding="nearest")
    qb, _ = quantize_weights(net, "beyond", bits=2, calibration_data=data, rounding="nearest", feedback_widen=(1.0,))
    assert report.settings["rounding"] == "nearest"
    for a, b in zip(qa.parameters(), qb.parameters(), strict=True):
        assert torch.equal(a, b)
