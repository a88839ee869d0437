"""The golden search against a brute-force dense grid of direct fake-quant evaluations."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from refs.quantizers import ref_dense_grid, ref_mse, sample

from requant_plugin import estimate_range

DISTS = st.sampled_from(["gaussian", "laplace", "student_t3"])
BITS = st.sampled_from([2, 3, 4, 6, 8])
SPACES = st.sampled_from(["uniform", "sqrt"])


@settings(max_examples=40, deadline=None)
@given(dist=DISTS, bits=BITS, space=SPACES, symmetric=st.booleans(),
       seed=st.integers(0, 10_000), n=st.integers(200, 1500))
def test_within_0p1_percent_of_dense_grid(dist: str, bits: int, space: str, symmetric: bool,
                                          seed: int, n: int) -> None:
    w = sample(dist, n, seed)
    est = estimate_range(torch.from_numpy(w), bits, symmetric=symmetric, space=space)
    got = float(np.mean((est.fake_quantize(torch.from_numpy(w)).double().numpy() - w) ** 2))
    best = ref_dense_grid(w, bits, symmetric, space, points=2000)
    assert got <= best * 1.001 + 1e-15, (got, best)


@settings(max_examples=40, deadline=None)
@given(dist=DISTS, bits=BITS, space=SPACES, symmetric=st.booleans(), seed=st.integers(0, 10_000))
def test_never_worse_than_min_max(dist: str, bits: int, space: str, symmetric: bool, seed: int) -> None:
    w = sample(dist, 700, seed, scale=0.05)
    est = estimate_range(torch.from_numpy(w), bits, symmetric=symmetric, space=space)
    # the chosen alpha and alpha = 1, both through the independent float64 reference quantizer;
    # 1e-4: torch's symmetric grid puts max|w| exactly on a rounding tie (+-(qmax - qmin) / 2) at
    # alpha = 1, which two float64 evaluations may resolve differently (one value, one code)
    got = ref_mse(w, float(est.alpha), bits, symmetric, space)
    assert got <= ref_mse(w, 1.0, bits, symmetric, space) * (1 + 1e-4) + 1e-18
    # and the estimate's own (float32) fake quantization agrees with the reference to float rounding
    fq = float(np.mean((est.fake_quantize(torch.from_numpy(w)).double().numpy() - w) ** 2))
    assert abs(fq - got) <= 1e-4 * got + 1e-18


@settings(max_examples=25, deadline=None)
@given(bits=BITS, space=SPACES, symmetric=st.booleans(), seed=st.integers(0, 10_000))
def test_per_channel_each_row_within_0p1_percent(bits: int, space: str, symmetric: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = (rng.standard_t(3, size=(4, 300)) * rng.uniform(0.1, 2.0, size=(4, 1))).astype(np.float32)
    est = estimate_range(torch.from_numpy(w), bits, symmetric=symmetric, per_channel=True,
                         space=space)
    wq = est.fake_quantize(torch.from_numpy(w)).double().numpy()
    for c in range(4):
        got = float(np.mean((wq[c] - w[c]) ** 2))
        assert got <= ref_dense_grid(w[c], bits, symmetric, space, points=2000) * 1.001 + 1e-15


def test_grid_search_matches_brute_force_grid() -> None:
    w = sample("laplace", 800, 3)
    est = estimate_range(torch.from_numpy(w), 4, search="grid", grid_points=2000)
    assert abs(float(est.mse) - ref_dense_grid(w, 4, False, "uniform")) <= 1e-9 * float(est.mse)
