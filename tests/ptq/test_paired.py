"""Paired input statistics of one layer in the float and the partly quantized model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from requant_plugin.ptq.calibration import collect_statistics
from requant_plugin.ptq.paired import collect_paired_statistics


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 5)).eval()


CAL = [torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]


@pytest.mark.parametrize("name", ["2", "5"])
@pytest.mark.parametrize("max_rows", [None, 20])
def test_same_model_gives_cross_equal_to_gram(name: str, max_rows: int | None) -> None:
    m = model()
    paired = collect_paired_statistics(m, copy.deepcopy(m), CAL, name, max_rows=max_rows)
    np.testing.assert_allclose(paired.cross, paired.stats.gram, rtol=1e-6, atol=1e-7)
    ref = collect_statistics(m, CAL, [name], max_rows=None)[name]
    np.testing.assert_allclose(paired.stats.mean, ref.mean, rtol=1e-6, atol=1e-7)
    if max_rows is None:
        np.testing.assert_allclose(paired.stats.gram, ref.gram, rtol=1e-5, atol=1e-6)


def test_cross_pairs_the_same_rows_of_both_models() -> None:
    m = model()
    q = copy.deepcopy(m)
    with torch.no_grad():
        q[0].weight.mul_(0.5)  # the quantized model's input to layer "2" is half... after the ReLU
        q[0].bias.mul_(0.5)
    paired = collect_paired_statistics(m, q, CAL, "2", max_rows=None)
    # x_q = x_f / 2 exactly (ReLU is positively homogeneous): E[x_q x_f^T] = 2 E[x_q x_q^T]
    np.testing.assert_allclose(paired.cross, 2.0 * paired.stats.gram, rtol=1e-5, atol=1e-7)
    assert paired.cross.shape == (2, 27, 27)


def test_unknown_layer_is_a_clear_error() -> None:
    m = model()
    with pytest.raises(ValueError, match="'nope' is not in both"):
        collect_paired_statistics(m, m, CAL, "nope")


@pytest.mark.parametrize("name", ["0", "2", "5"])
def test_projected_cross_is_the_cross_times_the_weight(name: str) -> None:
    m = model()
    q = copy.deepcopy(m)
    with torch.no_grad():
        q[0].weight.add_(0.05 * torch.randn_like(q[0].weight))  # the quantized model's inputs differ from layer 2 on
    layer = dict(m.named_modules())[name]
    w = layer.weight.detach()
    full = collect_paired_statistics(m, q, CAL, name, max_rows=20)
    proj = collect_paired_statistics(m, q, CAL, name, max_rows=20, weight=w)
    g, n = full.stats.gram.shape[0], full.stats.gram.shape[1]
    per = w.shape[0] // g
    assert full.cross is not None and full.cross_out is None
    if 2 * per < n:  # cheaper projected: E[x_q y_f^T] on the same rows
        assert proj.cross is None and proj.cross_out is not None and proj.cross_out.shape == (g, n, per)
        w3 = w.double().reshape(g, per, n).numpy()
        want = np.stack([full.cross[i] @ w3[i].T for i in range(g)])
        np.testing.assert_allclose(proj.cross_out, want, rtol=1e-5, atol=1e-6)
    else:  # as wide as the inputs: the full cross term is kept
        assert proj.cross_out is None
        np.testing.assert_allclose(proj.cross, full.cross)
    w2 = w.double().reshape(w.shape[0], -1).numpy()
    ref = full.compensated(w2)  # (the Linear's Gram has fewer rows than inputs: float32 sums matter more)
    np.testing.assert_allclose(proj.compensated(w2), ref, rtol=0, atol=1e-3 * np.abs(ref).max())
