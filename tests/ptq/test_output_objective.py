"""core.output_objective: the Gram-matrix output MSE, its search and error-feedback rounding.

References are computed directly on the data (``X @ (W - Wq).T``) with the closed-form
quantizer of ``tests/refs/quantizers.py``, never through the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from refs.quantizers import ref_fake_quant

from requant_plugin.core import Grid, golden_search, grid_search
from requant_plugin.core.output_objective import (
    OutputObjective,
    direct_output_mse,
    error_feedback_round,
    gram_from_rows,
    output_mse,
)


def _data(seed: int = 0, n_rows: int = 2000, n: int = 18, c: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(n, n)) / np.sqrt(n)  # correlated inputs, as after a conv + ReLU
    x = np.maximum(rng.normal(size=(n_rows, n)) @ mix + 0.3, 0.0)
    w = rng.laplace(size=(c, n)) * 0.1
    return x, w


def _ref_rows(w: np.ndarray, alphas: np.ndarray, bits: int, symmetric: bool, space: str) -> np.ndarray:
    return np.stack([ref_fake_quant(row, float(a), bits, symmetric, space) for row, a in zip(w, alphas, strict=True)])


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("space", ["uniform", "sqrt"])
def test_per_channel_loss_equals_direct_output_error(symmetric: bool, space: str) -> None:
    x, w = _data()
    g, _, _ = gram_from_rows(x)
    obj = OutputObjective(w, g, Grid.from_bits(3, symmetric=symmetric), p=0.5 if space == "sqrt" else 1.0,
                          per_channel=True)
    rng = np.random.default_rng(1)
    alphas = rng.uniform(0.3, 1.0, size=(w.shape[0], 4))
    got = obj(alphas)
    for k in range(alphas.shape[1]):
        wq = _ref_rows(w, alphas[:, k], 3, symmetric, space)
        ref = np.mean((x @ (w - wq).T) ** 2, axis=0)
        np.testing.assert_allclose(got[:, k], ref, rtol=1e-9, atol=1e-14)


def test_wide_layers_evaluate_the_loss_through_the_cholesky_factor() -> None:
    x, w = _data(seed=3, n_rows=1500, n=1100, c=5)  # n >= CHOLESKY_MIN_N, more rows than inputs
    x[:, :3] = 0.0  # dead inputs: no row or column in G
    g, _, _ = gram_from_rows(x)
    obj = OutputObjective(w, g, Grid.from_bits(4), per_channel=True)
    assert obj.cholesky is not None and obj.cholesky.live is not None
    alphas = np.random.default_rng(4).uniform(0.3, 1.0, size=(w.shape[0], 3))
    got = obj(alphas)
    for k in range(alphas.shape[1]):
        wq = _ref_rows(w, alphas[:, k], 4, False, "uniform")
        # float32 products in the factored form: each loss to about 1e-6 relative
        np.testing.assert_allclose(got[:, k], np.mean((x @ (w - wq).T) ** 2, axis=0), rtol=1e-5, atol=1e-14)


def test_per_tensor_loss_is_mean_over_channels_of_direct_error() -> None:
    x, w = _data(seed=2)
    g, _, _ = gram_from_rows(x)
    obj = OutputObjective(w, g, Grid.from_bits(4), per_channel=False)
    for alpha in (0.4, 0.77, 1.0):
        wq = ref_fake_quant(w.ravel(), alpha, 4, False, "uniform").reshape(w.shape)
        ref = np.mean((x @ (w - wq).T) ** 2)
        np.testing.assert_allclose(obj(np.array([[alpha]]))[0, 0], ref, rtol=1e-9)
        np.testing.assert_allclose(obj.dequantize(np.array([alpha])), wq, atol=1e-12)


def test_grouped_gram_matches_each_group_inputs() -> None:
    x, w = _data(seed=3, n=10, c=4)
    x2, _ = _data(seed=4, n=10, c=4)
    grams = np.stack([gram_from_rows(x)[0], gram_from_rows(x2)[0]])
    obj = OutputObjective(w, grams, Grid.from_bits(3), per_channel=True)
    a = np.full((4, 1), 0.8)
    wq = obj.dequantize(a[:, 0])
    ref = np.concatenate([direct_output_mse(x, w[:2], wq[:2]), direct_output_mse(x2, w[2:], wq[2:])])
    np.testing.assert_allclose(obj(a)[:, 0], ref, rtol=1e-9)
    np.testing.assert_allclose(output_mse(w, wq, grams), ref, rtol=1e-9)


def test_golden_search_close_to_dense_grid_and_never_worse_than_minmax() -> None:
    x, w = _data(seed=5)
    g, _, _ = gram_from_rows(x)
    for per_channel in (True, False):
        obj = OutputObjective(w, g, Grid.from_bits(3), per_channel=per_channel)
        res = golden_search(obj, n_brackets=2, tol=1e-3, max_iter=16)
        dense = grid_search(OutputObjective(w, g, Grid.from_bits(3), per_channel=per_channel), 1000)
        minmax = obj(np.ones((obj.rows, 1)))[:, 0]
        assert np.all(res.mse <= minmax + 1e-15)
        assert np.all(res.mse <= dense.mse * 1.02 + 1e-15)


def test_output_objective_beats_weight_objective_on_output_error() -> None:
    # On correlated inputs the alpha minimising the weight MSE is not the one minimising the
    # layer output error; the output search must do at least as well on the output error.
    x, w = _data(seed=6)
    g, _, _ = gram_from_rows(x)
    obj = OutputObjective(w, g, Grid.from_bits(3), per_channel=True)
    res = golden_search(obj)
    dense_w = np.array([min(range(1, 1001), key=lambda k: np.mean((ref_fake_quant(r, k / 1000, 3, False, "uniform")
                                                                    - r) ** 2)) / 1000 for r in w])
    wq_w = _ref_rows(w, dense_w, 3, False, "uniform")
    assert np.all(res.mse <= direct_output_mse(x, w, wq_w) + 1e-15)


def test_refit_is_least_squares_for_fixed_codes() -> None:
    x, w = _data(seed=7)
    g, _, _ = gram_from_rows(x)
    obj = OutputObjective(w, g, Grid.from_bits(3), per_channel=False)
    a0 = np.array([0.6])
    codes = obj.codes(a0[:, None])[0, 0]  # (C, n) integer codes minus zero point
    s1 = obj.s1[0]
    # brute force over t with the codes held fixed: w_hat = t * s1 * codes
    ts = np.linspace(0.3, 0.9, 6001)
    losses = [np.mean((x @ (w - t * s1 * codes).T) ** 2) for t in ts]
    t_best = ts[int(np.argmin(losses))]
    assert abs(obj.refit(a0)[0] - t_best) < 2e-4


def test_gram_accumulates_over_batches() -> None:
    x, _ = _data(seed=8)
    g_all, mu_all, n_all = gram_from_rows(x)
    parts = [gram_from_rows(x[i:i + 300]) for i in range(0, x.shape[0], 300)]
    g = sum(p[0] * p[2] for p in parts) / sum(p[2] for p in parts)
    mu = sum(p[1] * p[2] for p in parts) / sum(p[2] for p in parts)
    np.testing.assert_allclose(g, g_all, rtol=1e-12)
    np.testing.assert_allclose(mu, mu_all, rtol=1e-12)
    assert n_all == x.shape[0]
    np.testing.assert_allclose(g_all, x.T @ x / x.shape[0])


def test_error_feedback_with_uncorrelated_inputs_is_nearest_rounding() -> None:
    # G diagonal: no column can compensate another, so feedback rounding == nearest rounding.
    _, w = _data(seed=9)
    g = np.diag(np.linspace(0.5, 2.0, w.shape[1]))
    obj = OutputObjective(w, g, Grid.from_bits(3), per_channel=True)
    alpha = np.full(w.shape[0], 0.8)
    got = error_feedback_round(w, g, obj.column_quantizer(alpha))
    np.testing.assert_allclose(got, _ref_rows(w, alpha, 3, False, "uniform"), atol=1e-12)


def _low_rank(seed: int, n: int = 27, c: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Strongly correlated inputs (9 latent factors for 27 features, like overlapping patches)."""
    rng = np.random.default_rng(seed)
    lat, mix = rng.normal(size=(2000, 9)), rng.normal(size=(9, n))
    x = np.maximum(lat @ mix / 3 + 0.1 * rng.normal(size=(2000, n)) + 0.3, 0.0)
    return x, rng.laplace(size=(c, n)) * 0.1


@pytest.mark.parametrize("seed", [10, 11, 12])
@pytest.mark.parametrize("order", ["input", "energy"])
def test_error_feedback_lowers_output_error_and_stays_on_grid(seed: int, order: str) -> None:
    x, w = _low_rank(seed)
    g, _, _ = gram_from_rows(x)
    obj = OutputObjective(w, g, Grid.from_bits(3), per_channel=True)
    alpha = golden_search(obj).alpha
    nearest = _ref_rows(w, alpha, 3, False, "uniform")
    fb = error_feedback_round(w, g, obj.column_quantizer(alpha), order=order)
    assert direct_output_mse(x, w, fb).mean() < 0.9 * direct_output_mse(x, w, nearest).mean()
    scale = (alpha * obj.s1)[:, None]
    codes = fb / scale + obj.z[:, None]
    np.testing.assert_allclose(codes, np.rint(codes), atol=1e-6)
    assert codes.min() > -1e-6 and codes.max() < 7 + 1e-6


def test_bad_inputs_raise() -> None:
    _, w = _data()
    with pytest.raises(ValueError, match="gram must be"):
        OutputObjective(w, np.eye(3), Grid.from_bits(4))
    with pytest.raises(ValueError, match="groups"):
        OutputObjective(w, np.stack([np.eye(w.shape[1])] * 4), Grid.from_bits(4))
    with pytest.raises(ValueError, match="order"):
        error_feedback_round(w, np.eye(w.shape[1]), lambda j, v: v, order="random")


def test_single_precision_output_mse_is_close_to_the_float64_one() -> None:
    x, w = _data(seed=8, n_rows=400, n=300, c=6)
    g, _, _ = gram_from_rows(x)
    wq = np.round(w * 8) / 8
    exact = output_mse(w, wq, g)
    np.testing.assert_allclose(output_mse(w, wq, g, single=True), exact, rtol=1e-5)
    np.testing.assert_allclose(exact, direct_output_mse(x, w, wq), rtol=1e-9)
