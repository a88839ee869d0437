"""The power transform and its inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from refs.quantizers import sample

from requant_plugin import estimate_range
from requant_plugin.core import PowerTransform


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 9999), p=st.sampled_from([0.25, 0.5, 0.75, 1.0]))
def test_round_trip(seed: int, p: float) -> None:
    w = sample("student_t3", 64, seed).astype(np.float64).reshape(4, 16)
    t = PowerTransform.fit(w, p)
    y = t.forward(w)
    assert np.all(np.abs(y) <= 1.0 + 1e-12) or p == 1.0
    np.testing.assert_allclose(t.inverse(y), w, rtol=1e-12, atol=1e-15)


def test_sqrt_transform_is_sign_sqrt_up_to_scale() -> None:
    w = np.array([[-4.0, -1.0, 0.0, 0.25, 9.0]])
    y = PowerTransform.fit(w, 0.5).forward(w)
    np.testing.assert_allclose(y * np.sqrt(9.0), np.sign(w) * np.sqrt(np.abs(w)))


def test_p_one_reproduces_uniform_exactly() -> None:
    w = torch.from_numpy(sample("laplace", 3000, 5))
    for sym in (False, True):
        a = estimate_range(w, 4, space="uniform", symmetric=sym)
        b = estimate_range(w, 4, space="sqrt", p=1.0, symmetric=sym)
        assert float(a.alpha) == float(b.alpha) and float(a.mse) == float(b.mse)
        assert torch.equal(a.fake_quantize(w), b.fake_quantize(w))


def test_rejects_bad_exponent() -> None:
    import pytest

    with pytest.raises(ValueError, match="exponent"):
        PowerTransform.fit(np.ones((1, 3)), 1.5)


def test_zero_is_exactly_representable_in_sqrt_space() -> None:
    w = torch.tensor([0.0, 0.0, 0.3, -0.7, 1.2, -0.01])
    est = estimate_range(w, 3, space="sqrt")
    assert torch.all(est.fake_quantize(w)[:2] == 0)


@pytest.mark.parametrize("p", [1.0, 0.5, 0.7])
def test_inverse_inplace_is_inverse_bit_for_bit(p: float) -> None:
    rng = np.random.default_rng(3)
    tf = PowerTransform.fit(rng.standard_normal((5, 40)), p)
    y = rng.uniform(-1.0, 1.0, size=(5, 3, 40))
    expect = tf.inverse(y)
    got = tf.inverse_inplace(y.copy())
    assert np.array_equal(got, expect)
