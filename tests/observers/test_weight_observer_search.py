"""Weight observers: the search against an independent dense-grid brute force, and the cache.

The reference quantizes with ``torch.fake_quantize_per_channel_affine`` at scale/zero point
computed from closed-form formulas for 2,000 alphas, and keeps the best MSE per channel; the
observer's (scale, zero point) must reach that MSE (golden search) or match it (grid search).
"""

from __future__ import annotations

import pytest
import torch

from requant_plugin.observers import PerChannelREQuantObserver, REQuantWeightObserver

ALPHAS = torch.arange(1, 2001, dtype=torch.float64) / 2000


def _heavy(c: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, n, generator=g)
    w = w * torch.rand(c, 1, generator=g).add(0.2)
    w[:, 0] *= 6.0  # one outlier per channel
    return w


def _fq(w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    return torch.fake_quantize_per_channel_affine(w, scale.float(), zp.int(), 0, qmin, qmax)


def _mse_rows(w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    return ((_fq(w, scale, zp, qmin, qmax).double() - w.double()) ** 2).mean(dim=1)


def _brute(w: torch.Tensor, qmin: int, qmax: int, symmetric: bool) -> torch.Tensor:
    """Best per-row MSE over the dense alpha grid, closed-form qparams (torch conventions),
    vectorised over all alphas: q = clamp(round_half_even(w / s) + z), w_hat = s * (q - z)."""
    wd = w.double()[None]  # (1, C, n)
    lo = torch.clamp(w.amin(dim=1), max=0).double()[None, :, None]
    hi = torch.clamp(w.amax(dim=1), min=0).double()[None, :, None]
    a = ALPHAS[:, None, None]
    if symmetric:
        s = torch.maximum(-lo, hi) * a / ((qmax - qmin) / 2)
        z = torch.zeros_like(s)
    else:
        s = (hi - lo) * a / (qmax - qmin)
        z = torch.clamp(qmin - torch.round(lo * a / s), qmin, qmax)
    q = torch.clamp(torch.round(wd / s) + z, qmin, qmax)
    return ((s * (q - z) - wd) ** 2).mean(dim=2).amin(dim=0)


@pytest.mark.parametrize(("qscheme", "qmin", "qmax"), [
    (torch.per_channel_symmetric, -8, 7),
    (torch.per_channel_symmetric, -128, 127),
    (torch.per_channel_affine, -8, 7),
    (torch.per_channel_symmetric, -4, 3),
])
def test_per_channel_search_reaches_dense_grid_optimum(qscheme: torch.qscheme, qmin: int, qmax: int) -> None:
    w = _heavy(6, 300, seed=0)
    ref = _brute(w, qmin, qmax, qscheme == torch.per_channel_symmetric)
    for search, tol in (("golden", 1e-3), ("grid", 1e-6)):
        obs = PerChannelREQuantObserver(dtype=torch.qint8, qscheme=qscheme, quant_min=qmin, quant_max=qmax,
                                        search=search)
        obs(w)
        s, z = obs.calculate_qparams()
        got = _mse_rows(w, s, z, qmin, qmax)
        assert torch.all(got <= ref * (1 + tol) + 1e-12), (search, got / ref)
        minmax = PerChannelREQuantObserver(dtype=torch.qint8, qscheme=qscheme, quant_min=qmin,
                                           quant_max=qmax, search="minmax")
        minmax(w)
        assert torch.all(got <= _mse_rows(w, *minmax.calculate_qparams(), qmin, qmax) + 1e-12)
    if qmax - qmin < 20:  # at 3-4 bits the outlier must be clipped: alpha well below 1
        assert float(obs.alpha.max()) < 0.9


def test_per_tensor_weight_search_reaches_dense_optimum() -> None:
    w = _heavy(1, 2000, seed=1)
    obs = REQuantWeightObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-8, quant_max=7)
    obs(w)
    s, z = obs.calculate_qparams()
    assert s.shape == (1,) and z.shape == (1,)  # convert_fx does float(scale), int(zero_point)
    got = _mse_rows(w, s.expand(1), z.expand(1), -8, 7)
    assert float(got) <= float(_brute(w, -8, 7, True)) * 1.001


def test_sqrt_space_clip_is_the_transformed_search_mapped_back() -> None:
    """space='sqrt': the range is T^-1(alpha * T(max)) = alpha**2 * max for p = 1/2, where alpha
    minimises the MSE of the sqrt-domain quantizer (brute force written here from the formulas)."""
    w = _heavy(4, 400, seed=2)
    obs = PerChannelREQuantObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-8,
                                    quant_max=7, space="sqrt", search="grid")
    obs(w)
    m = w.abs().amax(dim=1, keepdim=True).double()
    y = torch.sign(w.double()) * (w.double().abs() / m).sqrt()
    best, best_a = torch.full((4,), float("inf"), dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    for a in ALPHAS:
        s = a / 7.5
        yq = torch.clamp(torch.round(y / s), -8, 7) * s
        mse = ((m * yq * yq.abs() - w.double()) ** 2).mean(dim=1)
        better = mse < best
        best, best_a = torch.where(better, mse, best), torch.where(better, a, best_a)
    torch.testing.assert_close(obs.alpha.double(), best_a, atol=1.5e-3, rtol=0)
    amax = w.abs().amax(dim=1)
    torch.testing.assert_close(obs.clip_max, obs.alpha**2 * w.amax(dim=1), rtol=1e-5, atol=0)
    s, _ = obs.calculate_qparams()
    torch.testing.assert_close(s, obs.alpha**2 * amax / 7.5, rtol=1e-5, atol=0)


def test_weight_search_runs_once_per_distinct_weight() -> None:
    conv = torch.nn.Conv2d(3, 8, 3)
    obs = PerChannelREQuantObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-8,
                                    quant_max=7)
    for _ in range(5):  # pt2e calls weight observers on every calibration batch
        obs(conv.weight)
    assert obs.searches == 1
    first = obs.calculate_qparams()[0].clone()
    with torch.no_grad():
        conv.weight.mul_(3.0)  # in-place change: new version counter -> search again
    obs(conv.weight)
    assert obs.searches == 2
    torch.testing.assert_close(obs.calculate_qparams()[0], first * 3.0, rtol=1e-5, atol=0)
    obs(torch.randn(8, 3, 3, 3))  # a different tensor
    assert obs.searches == 3
    obs(conv.weight.detach())  # the same storage and version through a detached view
    assert obs.searches == 4  # it differs from the previous tensor
    obs(conv.weight.detach())
    assert obs.searches == 4


def test_weight_observer_rejects_bad_input() -> None:
    obs = PerChannelREQuantObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    with pytest.raises(TypeError, match="floating-point"):
        obs(torch.ones(2, 2, dtype=torch.int32))
    bad = torch.randn(4, 4)
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        obs(bad)
    with pytest.raises(ValueError, match="per-channel"):
        PerChannelREQuantObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    with pytest.raises(ValueError, match="per-tensor"):
        REQuantWeightObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    with pytest.raises(ValueError, match="unknown search"):
        REQuantWeightObserver(search="mse")
    with pytest.raises(ValueError, match="alpha must be in"):
        REQuantWeightObserver(alpha=1.5)
    with pytest.raises(ValueError, match="ch_axis"):
        PerChannelREQuantObserver(ch_axis=4, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)(bad)
    with pytest.raises(ValueError, match="256 levels"):
        REQuantWeightObserver(dtype=torch.int16, qscheme=torch.per_tensor_symmetric)


def _brute_coherent(w: torch.Tensor, qmin: int, qmax: int, rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Best per-row (sum d**2 + rho * (sum d)**2) / n over the dense alpha grid, symmetric torch
    quantizer written out here; returns (best loss, best alpha)."""
    wd = w.double()[None]
    amax = w.abs().amax(dim=1).double()[None, :, None]
    a = ALPHAS[:, None, None]
    s = amax * a / ((qmax - qmin) / 2)
    d = torch.clamp(torch.round(wd / s), qmin, qmax) * s - wd
    loss = ((d**2).sum(dim=2) + rho * d.sum(dim=2) ** 2) / w.shape[1]
    best, idx = loss.min(dim=0)
    return best, ALPHAS[idx]


@pytest.mark.parametrize("rho", [0.0, 0.4669, 2.0])
def test_coherent_error_objective_against_brute_force(rho: float) -> None:
    from requant_plugin.observers import RELU_MEAN_RATIO

    assert pytest.approx(0.46694, abs=1e-4) == RELU_MEAN_RATIO
    w = _heavy(6, 300, seed=4)
    best, best_alpha = _brute_coherent(w, -8, 7, rho)
    grid_obs = None
    for search, tol in (("grid", 1e-5), ("golden", 2e-3)):
        obs = PerChannelREQuantObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-8,
                                        quant_max=7, search=search, input_mean_ratio=rho)
        obs(w)
        s, _ = obs.calculate_qparams()
        d = torch.fake_quantize_per_channel_affine(w, s, torch.zeros(6, dtype=torch.int32), 0, -8, 7).double() - w
        got = ((d**2).sum(dim=1) + rho * d.sum(dim=1) ** 2) / w.shape[1]
        assert torch.all(got <= best * (1 + tol) + 1e-15), (search, got / best)
        if search == "grid":
            torch.testing.assert_close(obs.alpha.double(), best_alpha, atol=1e-6, rtol=0)  # float32 buffer
            grid_obs = obs
    assert grid_obs is not None
    plain = PerChannelREQuantObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-8,
                                      quant_max=7, search="grid")
    plain(w)
    if rho == 0.0:  # rho = 0 is REQuant's plain weight MSE
        torch.testing.assert_close(plain.alpha, grid_obs.alpha)
    else:  # the coherent term changes the choice
        assert not torch.equal(plain.alpha, grid_obs.alpha)


def test_relu_mean_ratio_matches_monte_carlo() -> None:
    from requant_plugin.observers import RELU_MEAN_RATIO

    x = torch.relu(torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    assert float(x.mean() ** 2 / x.var()) == pytest.approx(RELU_MEAN_RATIO, rel=5e-3)


def test_factories_use_the_coherent_term_by_default() -> None:
    from requant_plugin.observers import RELU_MEAN_RATIO
    from requant_plugin.qconfig import get_requant_qconfig

    assert get_requant_qconfig().weight().input_mean_ratio == RELU_MEAN_RATIO
    assert get_requant_qconfig(weight_input_mean_ratio=0.0).weight().input_mean_ratio == 0.0
    with pytest.raises(ValueError, match="input_mean_ratio"):
        PerChannelREQuantObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, input_mean_ratio=-1.0)
