"""estimate_range: torch's own observers at alpha = 1, closed forms, dtypes and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from refs.quantizers import ref_fake_quant, sample
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from requant_plugin import RangeEstimate, estimate_range


@pytest.mark.parametrize("seed", range(5))
def test_alpha_one_symmetric_8bit_equals_torch_minmax_observer(seed: int) -> None:
    w = torch.from_numpy(sample("student_t3", 4000, seed, scale=0.1))
    obs = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    obs(w)
    scale, zp = obs.calculate_qparams()
    est = estimate_range(w, 8, symmetric=True, search="minmax")
    assert float(est.alpha) == 1.0
    assert float(est.scale) == pytest.approx(float(scale), rel=1e-6)
    assert int(est.zero_point) == int(zp) == 0
    assert (est.quant_min, est.quant_max) == (obs.quant_min, obs.quant_max)
    ref = torch.fake_quantize_per_tensor_affine(w, float(scale), int(zp), -128, 127)
    diff = (est.fake_quantize(w) - ref).abs()
    # torch multiplies by 1/scale in float32; only elements within float rounding of a tie differ
    assert int((diff > float(scale) / 2).sum()) <= 2 and float(diff.max()) <= float(scale) * 1.0001


def test_alpha_one_per_channel_equals_torch_per_channel_observer() -> None:
    w = torch.randn(16, 8, 3, 3) * torch.linspace(0.01, 2.0, 16).view(-1, 1, 1, 1)
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    obs(w)
    scale, zp = obs.calculate_qparams()
    est = estimate_range(w, 8, symmetric=True, per_channel=True, search="minmax")
    torch.testing.assert_close(est.scale.float(), scale.float(), rtol=1e-6, atol=0)
    assert torch.equal(est.zero_point, zp.long())


def test_alpha_one_asymmetric_equals_torch_affine_observer() -> None:
    w = torch.from_numpy(sample("laplace", 2000, 1)) + 0.3
    obs = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    obs(w)
    scale, zp = obs.calculate_qparams()
    est = estimate_range(w, 8, search="minmax")
    assert float(est.scale) == pytest.approx(float(scale), rel=1e-6)
    assert int(est.zero_point) == int(zp)


def test_tensorrt_convention_scale_is_amax_over_127() -> None:
    w = torch.tensor([-2.54, 0.1, 1.0])
    est = estimate_range(w, 8, symmetric=True, convention="tensorrt", search="minmax")
    assert float(est.scale) == pytest.approx(2.54 / 127)
    assert (est.quant_min, est.quant_max) == (-128, 127)
    assert int(est.quantize(w)[0]) == -127


@pytest.mark.parametrize("space", ["uniform", "sqrt"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_fake_quantize_matches_closed_form(space: str, symmetric: bool) -> None:
    w = sample("gaussian", 1500, 2)
    est = estimate_range(torch.from_numpy(w), 4, symmetric=symmetric, space=space)
    ref = ref_fake_quant(w, float(est.alpha), 4, symmetric, space)
    got = est.fake_quantize(torch.from_numpy(w)).double().numpy()
    assert np.mean(np.abs(got - ref) > 1e-6) < 0.002  # only rare near-tie elements may differ
    assert float(est.mse) == pytest.approx(float(np.mean((got - w) ** 2)), rel=1e-5)


def test_levels_are_the_dequantized_codebook() -> None:
    w = torch.from_numpy(sample("laplace", 1000, 4))
    est = estimate_range(w, 3, space="sqrt")
    lv = est.levels()
    assert lv.shape == (8,)
    fq = est.fake_quantize(w).double().numpy()
    dist = np.abs(fq[:, None] - lv.numpy()[None, :]).min(axis=1)
    assert dist.max() < 1e-6  # every weight lands on one of the 2**3 levels


def test_deterministic() -> None:
    w = torch.from_numpy(sample("student_t3", 5000, 9))
    a, b = estimate_range(w, 4, space="sqrt"), estimate_range(w.clone(), 4, space="sqrt")
    assert float(a.alpha) == float(b.alpha) and a.evaluations == b.evaluations


def test_result_is_frozen_dataclass() -> None:
    est = estimate_range(torch.randn(10), 4)
    assert isinstance(est, RangeEstimate)
    with pytest.raises(AttributeError):
        est.alpha = torch.tensor(0.5)  # type: ignore[misc]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_precision_dtypes_round_trip(dtype: torch.dtype) -> None:
    w = torch.randn(64, 9).to(dtype)
    est = estimate_range(w, 4, per_channel=True)
    out = est.fake_quantize(w)
    assert out.dtype == dtype and out.shape == w.shape
    ref = estimate_range(w.float(), 4, per_channel=True)
    torch.testing.assert_close(est.alpha, ref.alpha)


def test_ch_axis_other_than_zero() -> None:
    w = torch.randn(3, 5, 7)
    est = estimate_range(w, 4, per_channel=True, ch_axis=1)
    assert est.alpha.shape == (5,)
    ref = estimate_range(w.movedim(1, 0).contiguous(), 4, per_channel=True)
    torch.testing.assert_close(est.alpha, ref.alpha)
    assert est.fake_quantize(w).shape == w.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensor() -> None:  # pragma: no cover - runs on GPU machines only
    w = torch.randn(32, 16, device="cuda")
    est = estimate_range(w, 4, per_channel=True, space="sqrt")
    out = est.fake_quantize(w)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), estimate_range(w.cpu(), 4, per_channel=True,
                                                         space="sqrt").fake_quantize(w.cpu()))


# ---- degenerate and bad input -------------------------------------------------------------

@pytest.mark.parametrize("w", [torch.zeros(10), torch.full((10,), 0.7), torch.full((10,), -2.0),
                               torch.tensor([3.0]), torch.zeros(0), torch.zeros(4, 0)])
@pytest.mark.parametrize("space", ["uniform", "sqrt"])
def test_degenerate_tensors_get_a_valid_range(w: torch.Tensor, space: str) -> None:
    for sym in (False, True):
        est = estimate_range(w, 4, space=space, symmetric=sym)
        assert torch.isfinite(est.scale).all() and (est.scale > 0).all()
        out = est.fake_quantize(w)
        assert torch.isfinite(out).all()
        if not sym:  # asymmetric ranges represent constants and zeros exactly
            torch.testing.assert_close(out, w)
        elif w.numel():  # torch's symmetric scale amax/((qmax-qmin)/2) cannot reach +amax
            ref = ref_fake_quant(w.numpy().ravel(), float(est.alpha), 4, True, space)
            np.testing.assert_allclose(out.numpy().ravel(), ref, rtol=1e-6, atol=1e-7)


def test_single_element_channels() -> None:
    w = torch.tensor([[0.5], [-1.0], [0.0]])
    est = estimate_range(w, 4, per_channel=True)
    torch.testing.assert_close(est.fake_quantize(w), w)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_inf_rejected_with_name(bad: float) -> None:
    w = torch.randn(10)
    w[3] = bad
    with pytest.raises(ValueError, match=r"layer1.conv.*NaN/Inf"):
        estimate_range(w, 4, name="layer1.conv")


@pytest.mark.parametrize("bits", [0, 1, 9, 16, 4.5, True])
def test_bad_bits(bits: object) -> None:
    with pytest.raises(ValueError, match=r"2, 3, 4, 5, 6, 7, 8|integer"):
        estimate_range(torch.randn(5), bits)  # type: ignore[arg-type]


def test_unknown_space_and_search_list_valid_values() -> None:
    with pytest.raises(ValueError, match="'uniform', 'sqrt'"):
        estimate_range(torch.randn(5), 4, space="log")
    with pytest.raises(ValueError, match="'golden', 'grid'"):
        estimate_range(torch.randn(5), 4, search="bisect")


def test_integer_tensor_type_error() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        estimate_range(torch.arange(10), 4)


def test_input_not_modified() -> None:
    w = torch.randn(100)
    before = w.clone()
    estimate_range(w, 3, space="sqrt").fake_quantize(w)
    assert torch.equal(w, before)
