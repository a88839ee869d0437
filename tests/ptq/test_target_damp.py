"""``target_damp``: the ridge of the compensated target ``W*``, fixed or chosen per layer by two-fold
cross-validation over the even and the odd calibration batches."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from refs.nets import make_depthwise_net as model
from refs.nets import random_batches as data

from requant_plugin import quantize_weights
from requant_plugin.core.ridge_cv import TargetFold, cross_validated_damp
from requant_plugin.ptq.config import QuantizeConfig
from requant_plugin.ptq.paired import collect_paired_statistics
from requant_plugin.ptq.recipes import RECIPES, TARGET_DAMPS

CANDIDATES = (0.01, 0.03, 0.1, 0.3)


def half_quantized(seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A float model and a copy whose first layers carry a weight error (the "partly quantized" model)."""
    m = model(seed)
    q = copy.deepcopy(m)
    with torch.no_grad():
        q[0].weight.add_(0.1 * torch.randn_like(q[0].weight))
        q[3].weight.add_(0.1 * torch.randn_like(q[3].weight))
    return m, q


@pytest.mark.parametrize("name", ["3", "6", "20"])  # a full cross term, a depthwise (grouped) one, a Linear
def test_folds_are_the_even_and_the_odd_batches(name: str) -> None:
    m, q = half_quantized(0)
    cal = data(0, batches=5)
    w = dict(m.named_modules())[name].weight.detach()
    paired = collect_paired_statistics(m, q, cal, name, max_rows=None, weight=w, folds=True)
    assert paired.folds is not None
    for got, part in zip(paired.folds, (cal[0::2], cal[1::2]), strict=True):
        ref = collect_paired_statistics(m, q, part, name, max_rows=None, weight=w)
        assert got.rows == ref.stats.gram_count
        np.testing.assert_allclose(got.gram, ref.stats.gram, rtol=1e-4, atol=1e-5)
        mine, want = (got.cross, ref.cross) if ref.cross is not None else (got.cross_out, ref.cross_out)
        assert mine is not None and want is not None
        np.testing.assert_allclose(mine, want, rtol=1e-4, atol=1e-5)
    whole = sum(f.rows * f.gram for f in paired.folds) / paired.stats.gram_count
    np.testing.assert_allclose(whole, paired.stats.gram, rtol=1e-5, atol=1e-6)
    w2 = w.double().reshape(w.shape[0], -1).numpy()
    assert paired.choose_damp(w, CANDIDATES) == cross_validated_damp(w2, paired.folds, CANDIDATES)


@pytest.mark.parametrize(("name", "project"), [("3", False), ("3", True), ("20", False)])
def test_a_fold_with_fewer_rows_than_inputs_keeps_them_and_chooses_as_its_statistics(name: str,
                                                                                      project: bool) -> None:
    m, q = half_quantized(0)
    cal = data(0, batches=5)
    w = dict(m.named_modules())[name].weight.detach()
    w2 = w.double().reshape(w.shape[0], -1).numpy()
    paired = collect_paired_statistics(m, q, cal, name, max_rows=4, weight=w if project else None, folds=True)
    assert paired.folds is not None
    for f in paired.folds:  # 12 and 8 sampled rows, fewer than the inputs (144, 16)
        assert f.row_q is not None and f.row_f is not None
        assert f.row_q.shape == (1, f.rows, w2.shape[1])
        assert f.row_f.shape == (1, f.rows, w2.shape[0] if f.cross_out is not None else w2.shape[1])
        np.testing.assert_allclose(f.row_q[0].T @ f.row_q[0] / f.rows, f.gram[0], rtol=1e-5, atol=1e-6)
    plain = tuple(TargetFold(f.gram, f.cross, f.cross_out, f.rows) for f in paired.folds)
    got, want = paired.choose_damp(w, CANDIDATES), cross_validated_damp(w2, plain, CANDIDATES)
    assert got.damp == want.damp
    np.testing.assert_allclose(got.errors, want.errors, rtol=1e-4)  # the Gram is summed in float32, the rows not
    many = collect_paired_statistics(m, q, cal, name, max_rows=None, weight=w if project else None, folds=True)
    assert many.folds is not None and all(f.row_q is None for f in many.folds)  # 2,304 or 16 rows a batch


def test_no_folds_unless_asked_or_with_one_batch() -> None:
    m, q = half_quantized(0)
    assert collect_paired_statistics(m, q, data(0), "3").folds is None
    assert collect_paired_statistics(m, q, data(0, batches=1), "3", folds=True).folds is None
    one = collect_paired_statistics(m, q, data(0, batches=1), "3", folds=True)
    assert one.choose_damp(q[3].weight, CANDIDATES).damp == CANDIDATES[0]  # nothing to cross-validate on
    assert one.choose_damp(q[3].weight, 0.2).damp == 0.2


def test_one_candidate_is_the_fixed_damp() -> None:
    m, cal = model(1), data(1)
    runs = [quantize_weights(m, 3, recipe="beyond", calibration_data=cal, target_damp=d) for d in (0.01, (0.01,))]
    ref = runs[0][0].state_dict()
    assert all(torch.equal(ref[k], v) for k, v in runs[1][0].state_dict().items())
    assert {layer.target_damp for _, rep in runs for layer in rep.layers} == {0.01}
    assert RECIPES["beyond"].target_damp == TARGET_DAMPS and RECIPES["beyond"].cross_validates


@pytest.mark.parametrize("seed", [0, 1])
def test_each_layer_takes_its_cross_validated_candidate(seed: int) -> None:
    m, cal = model(seed), data(seed)
    before = [p.detach().clone() for p in m.parameters()]
    fixed, _ = quantize_weights(m, 2, recipe="beyond", calibration_data=cal, target_damp=0.01)
    q, rep = quantize_weights(m, 2, recipe="beyond", calibration_data=cal, target_damp=CANDIDATES)
    assert rep.settings["target_damp"] == CANDIDATES
    chosen = {layer.name: layer.target_damp for layer in rep.layers}
    assert set(chosen.values()) <= set(CANDIDATES)
    assert chosen["0"] == CANDIDATES[0]  # the first layer's float and quantized inputs agree: a tie
    moved = [name for name, d in chosen.items() if d != 0.01]
    assert moved  # the W2 upstream error makes some layer take a stronger pull ...
    for name in moved:  # ... and its weight is that of the stronger pull
        assert not torch.equal(q.get_submodule(name).weight, fixed.get_submodule(name).weight)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))


def test_a_single_batch_is_split_into_two_folds() -> None:
    m, cal = model(2), torch.cat(data(2, batches=2))
    _, rep = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, target_damp=CANDIDATES)
    assert all(layer.target_damp in CANDIDATES for layer in rep.layers)
    with pytest.warns(UserWarning, match="single sample: the target damp cannot be cross-validated"):
        _, rep = quantize_weights(m, 4, recipe="beyond", calibration_data=cal[:1], target_damp=CANDIDATES)
    assert {layer.target_damp for layer in rep.layers} == {CANDIDATES[0]}


@pytest.mark.parametrize("bad", [0, -0.1, (), "0.1", True, (0.1, float("inf"))])
def test_bad_target_damp_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match="target_damp must be a number > 0"):
        QuantizeConfig(target_damp=bad)  # type: ignore[arg-type]


def test_candidates_are_sorted_and_distinct() -> None:
    cfg = QuantizeConfig(target_damp=[0.3, 0.01, 0.3, 1])
    assert cfg.target_damp == (0.01, 0.3, 1.0) and cfg.cross_validates
    assert not QuantizeConfig(target_damp=(0.2,)).cross_validates
