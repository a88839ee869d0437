"""``refit_scale``: the least-squares factor of a fixed rounding, checked against a dense scan of
``lambda`` (the ground truth), per channel, per group and per tensor; it never raises the error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requant_plugin.core.refit import REFIT_BOUNDS, refit_scale, refit_terms


def problem(seed: int, c: int, n: int, groups: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gs = []
    for _ in range(groups):
        x = rng.normal(size=(4 * n + 8, n)) @ rng.normal(size=(n, n)) * 0.3 + rng.normal(size=(4 * n + 8, n))
        gs.append(x.T @ x / len(x))
    w = rng.normal(size=(c * groups, n))
    s = np.abs(w).max(axis=1, keepdims=True) / 1.5  # a 2-bit symmetric grid {-1.5, ..., 1.5} s: coarse rounding
    w_hat = s * (np.clip(np.rint(w / s - 0.5), -2, 1) + 0.5)
    return w, w_hat, np.stack(gs)


def channel_errors(w: np.ndarray, q: np.ndarray, g: np.ndarray) -> np.ndarray:
    per = w.shape[0] // g.shape[0]
    e = w - q
    return np.concatenate([np.einsum("ij,ij->i", e[i * per:(i + 1) * per] @ g[i], e[i * per:(i + 1) * per])
                           for i in range(g.shape[0])])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.integers(1, 5), n=st.integers(1, 24), groups=st.sampled_from([1, 3]))
def test_matches_a_dense_scan_and_never_raises_the_error(seed: int, c: int, n: int, groups: int) -> None:
    w, q, g = problem(seed, c, n, groups)
    lam = refit_scale(w, q, g)
    grid = np.linspace(*REFIT_BOUNDS, 3001)
    scan = np.stack([channel_errors(w, t * q, g) for t in grid])  # (lambdas, C)
    got = channel_errors(w, lam[:, None] * q, g)
    assert np.all(got <= scan.min(axis=0) + 1e-9 * (1 + scan.min(axis=0)))  # at least as good as every scanned lambda
    assert np.all(got <= channel_errors(w, q, g) + 1e-12)


def test_one_factor_per_tensor_minimises_the_summed_error() -> None:
    w, q, g = problem(3, 6, 10)
    lam = refit_scale(w, q, g, per_channel=False)
    assert np.ptp(lam) == 0
    grid = np.linspace(*REFIT_BOUNDS, 3001)
    total = [channel_errors(w, t * q, g).sum() for t in grid]
    assert channel_errors(w, lam[:, None] * q, g).sum() <= min(total) + 1e-9


def test_closed_form_on_an_identity_gram() -> None:
    w = np.array([[1.0, 2.0, 3.0]])
    q = np.array([[1.0, 1.0, 2.0]])
    assert refit_scale(w, q, np.eye(3))[0] == pytest.approx((1 + 2 + 6) / (1 + 1 + 4))


def test_zero_rounding_keeps_one_and_bounds_hold() -> None:
    w = np.array([[1.0, -1.0], [100.0, 100.0]])
    q = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert refit_scale(w, q, np.eye(2)).tolist() == [1.0, REFIT_BOUNDS[1]]


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match="do not match"):
        refit_scale(np.ones((4, 3)), np.ones((4, 3)), np.ones((3, 3, 3)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(0.5, 2.0), groups=st.sampled_from([1, 2]))
def test_refitted_error_in_closed_form_is_the_direct_one(seed: int, lam: float, groups: int) -> None:
    rng = np.random.default_rng(seed)
    c, n = 4, 5
    w, q = rng.normal(size=(c, n)), rng.normal(size=(c, n))
    a = rng.normal(size=(groups, 2 * n, n))
    g = np.einsum("gmi,gmj->gij", a, a) / (2 * n)
    per = c // groups

    def err(v: np.ndarray) -> np.ndarray:
        e = w - v
        return np.array([e[i] @ g[i // per] @ e[i] for i in range(c)])

    terms = refit_terms(w, q, g[0] if groups == 1 else g)
    lams = np.full(c, lam)
    np.testing.assert_allclose(terms.error(err(q), lams), err(lams[:, None] * q), rtol=1e-5, atol=1e-6)
    best = terms.scale()
    assert np.all(terms.error(err(q), best) <= err(q) + 1e-6)  # the least-squares factor never loses
