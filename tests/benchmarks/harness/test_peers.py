"""The peer adapters of ``benchmarks.harness.peers`` against independent references.

Each adapter must reproduce the library or documented algorithm it stands for: torch.ao's
own observers and fake-quant ops, closed-form quantizers written here in NumPy, and the
published ACIQ constants.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.harness import peers
from benchmarks.harness.peers import aciq, minmax, modelopt_mse, percentile, torchao_mse


def _w(shape: tuple[int, ...] = (8, 4, 3, 3), seed: int = 0, heavy: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * 0.1
    if heavy:
        w = w + 0.02 * torch.sign(w) * torch.rand(shape, generator=g) ** 8 * 40
    return w


def _np_fq(x: np.ndarray, scale: float, zp: float, qmin: int, qmax: int) -> np.ndarray:
    return scale * (np.clip(np.rint(x / scale) + zp, qmin, qmax) - zp)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_minmax_matches_torch_observers(bits: int) -> None:
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    w = _w(heavy=True)
    obs = MinMaxObserver(
        dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=0, quant_max=2**bits - 1
    )
    obs(w)
    s, z = obs.calculate_qparams()
    ref = torch.fake_quantize_per_tensor_affine(w, float(s), int(z), 0, 2**bits - 1)
    torch.testing.assert_close(minmax.quantize_weight(w, bits), ref, atol=1e-6, rtol=0)

    half = 2 ** (bits - 1)
    obs = MinMaxObserver(
        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-half, quant_max=half - 1
    )
    obs(w)
    s, z = obs.calculate_qparams()
    ref = torch.fake_quantize_per_tensor_affine(w, float(s), int(z), -half, half - 1)
    torch.testing.assert_close(minmax.quantize_weight(w, bits, symmetric=True), ref, atol=1e-6, rtol=0)

    pc = PerChannelMinMaxObserver(
        ch_axis=0, dtype=torch.quint8, qscheme=torch.per_channel_affine, quant_min=0, quant_max=2**bits - 1
    )
    pc(w)
    s, z = pc.calculate_qparams()
    ref = torch.fake_quantize_per_channel_affine(w, s.float(), z.int(), 0, 0, 2**bits - 1)
    torch.testing.assert_close(minmax.quantize_weight(w, bits, per_channel=True), ref, atol=1e-6, rtol=0)


def test_percentile_range_and_limit() -> None:
    w = _w(heavy=True)
    x = w.double().numpy().ravel()
    lo, hi = np.percentile(x, 0.1), np.percentile(x, 99.9)
    s = (hi - lo) / 15
    z = np.clip(-np.rint(lo / s), 0, 15)
    ref = _np_fq(x, s, z, 0, 15)
    np.testing.assert_allclose(percentile.quantize_weight(w, 4).double().numpy().ravel(), ref, atol=1e-6)
    # the 100th percentile is the min-max range
    torch.testing.assert_close(
        percentile.quantize_weight(w, 4, percentile=100.0), minmax.quantize_weight(w, 4)
    )


def test_aciq_constants_match_banner() -> None:
    # Banner et al. (2019), optimal clipping in units of b (Laplace) for 2..8 bits
    published = [2.83, 3.89, 5.03, 6.20, 7.41, 8.64, 9.89]
    got = [aciq.clip_constants(b)[0] for b in range(2, 9)]
    np.testing.assert_allclose(got, published, atol=0.02)
    gauss = [1.71, 2.15, 2.55, 2.93, 3.28, 3.61, 3.92]
    np.testing.assert_allclose([aciq.clip_constants(b)[1] for b in range(2, 9)], gauss, atol=0.02)


def test_aciq_picks_the_family_by_likelihood() -> None:
    g = torch.Generator().manual_seed(1)
    lap = torch.distributions.Laplace(0.0, 1.0).sample((200_000,)).double().reshape(1, -1)
    gau = torch.randn(1, 200_000, generator=g, dtype=torch.float64)
    _lo, hi = aciq.clip_range(lap, 4)
    assert float(hi[0]) == pytest.approx(5.03, abs=0.1)  # k_laplace * b with b ~ 1
    _lo, hi = aciq.clip_range(gau, 4)
    assert float(hi[0]) == pytest.approx(2.56, abs=0.05)  # k_gauss * sigma


@pytest.mark.parametrize("per_channel", [False, True])
def test_modelopt_grid_is_the_best_of_39_documented_candidates(per_channel: bool) -> None:
    assert modelopt_mse.MULTIPLIERS.size == 39
    assert modelopt_mse.MULTIPLIERS[0] == 0.25 and modelopt_mse.MULTIPLIERS[-1] == 4.0
    w = _w(heavy=True)
    bits = 4
    out = modelopt_mse.quantize_weight(w, bits, per_channel=per_channel).double().numpy()
    rows = w.double().numpy().reshape(w.shape[0], -1) if per_channel else w.double().numpy().reshape(1, -1)
    got_rows = out.reshape(rows.shape)
    for r, got in zip(rows, got_rows, strict=True):
        amax = np.abs(r).max()
        errs = [np.mean((_np_fq(r, amax * m / 7, 0, -8, 7) - r) ** 2) for m in modelopt_mse.MULTIPLIERS]
        assert np.mean((got - r) ** 2) == pytest.approx(min(errs), rel=1e-6)


def test_modelopt_per_channel_independence() -> None:
    w = _w()
    w2 = w.clone()
    w2[3] *= 10.0
    a = modelopt_mse.quantize_weight(w, 4, per_channel=True)
    b = modelopt_mse.quantize_weight(w2, 4, per_channel=True)
    torch.testing.assert_close(b[3], 10.0 * a[3], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b[:3], a[:3])


@pytest.mark.parametrize("symmetric", [False, True])
def test_torchao_observer_is_best_of_100_symmetric_candidates(symmetric: bool) -> None:
    pytest.importorskip("torchao")
    w = _w(heavy=True)
    bits = 4
    out = torchao_mse.quantize_weight(w, bits, symmetric=symmetric).double().numpy().ravel()
    x = w.double().numpy().ravel()
    rng = max(abs(x.min()), x.max())
    errs = []
    for i in range(1, 101):
        t = rng * i / 100
        if symmetric:  # torchao symmetric int8-style: scale = t / ((qmax - qmin) / 2)
            s, z = 2 * t / 15, 0.0
        else:
            s = 2 * t / 15
            z = -8 - np.rint(-t / s)
        errs.append(np.mean((_np_fq(x, s, z, -8, 7) - x) ** 2))
    assert np.mean((out - x) ** 2) == pytest.approx(min(errs), rel=1e-4)


def test_torch_hist_matches_histogram_observer() -> None:
    from torch.ao.quantization.observer import HistogramObserver

    from benchmarks.harness.peers import torch_hist

    w = _w(heavy=True)
    obs = HistogramObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=0, quant_max=15)
    obs(w)
    s, z = obs.calculate_qparams()
    ref = torch.fake_quantize_per_tensor_affine(w, float(s), int(z), 0, 15)
    torch.testing.assert_close(torch_hist.quantize_weight(w, 4), ref, atol=1e-6, rtol=0)
    with pytest.raises(NotImplementedError):
        torch_hist.quantize_weight(w, 4, per_channel=True)


@pytest.mark.parametrize("symmetric", [False, True])
def test_brevitas_mse_grid(symmetric: bool) -> None:
    if peers.availability("brevitas_mse") is not None:
        pytest.skip(f"brevitas not usable: {peers.availability('brevitas_mse')}")
    from benchmarks.harness.peers import brevitas_mse

    w = _w(heavy=True)
    bits = 4
    out = brevitas_mse.quantize_weight(w, bits, symmetric=symmetric).double().numpy().ravel()
    x = w.double().numpy().ravel()
    assert np.unique(out).size <= 2**bits
    if symmetric:
        # narrow grid [-7, 7], scale = absmax * k / 20 / 7 for the best k in 1..20
        amax = np.abs(x).max()
        errs = [np.mean((_np_fq(x, amax * k / 20 / 7, 0, -7, 7) - x) ** 2) for k in range(1, 21)]
        assert np.mean((out - x) ** 2) == pytest.approx(min(errs), rel=1e-3)
    else:
        # never worse than the min-max range it starts from (the grid contains it)
        mm = minmax.quantize_weight(w, bits).double().numpy().ravel()
        assert np.mean((out - x) ** 2) <= np.mean((mm - x) ** 2) * (1 + 1e-6)


@pytest.mark.parametrize("key", sorted(peers.PEERS))
def test_every_peer_keeps_shape_and_level_count(key: str) -> None:
    if peers.availability(key) is not None:
        pytest.skip(f"{key} not usable here: {peers.availability(key)}")
    mod = peers.get(key)
    w = _w((6, 5, 3, 3), seed=3)
    for pc in (False, True):
        try:
            out = mod.quantize_weight(w, 3, per_channel=pc, symmetric=False)
        except NotImplementedError:
            continue
        assert out.shape == w.shape and out.dtype == w.dtype
        rows = out.reshape(out.shape[0], -1) if pc else out.reshape(1, -1)
        assert max(int(torch.unique(r).numel()) for r in rows) <= 8
        assert torch.mean((out - w) ** 2) < torch.mean(w**2)


def test_unknown_peer_is_rejected() -> None:
    with pytest.raises(KeyError, match="unknown peer"):
        peers.get("nope")
