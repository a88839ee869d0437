"""``coordinate_descent_round``: never raises the output error, stays on the grid, and ends at a point
no single-weight move improves (checked by trying every level of every weight)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requant_plugin.core.coordinate import coordinate_descent_round, nearest_level
from requant_plugin.core.transform import PowerTransform


def problem(seed: int, c: int, n: int, rows: int, p: float, bits: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, n)) @ rng.normal(size=(n, n)) * 0.3 + rng.normal(size=(rows, n))
    g = x.T @ x / rows
    w = rng.normal(size=(c, n)) * rng.uniform(0.2, 2.0, size=(c, 1))
    tf = PowerTransform.fit(w, p)
    y = tf.forward(w)
    lo, hi = 0, 2 ** bits - 1
    s = (y.max(axis=1) - y.min(axis=1)) / hi
    z = np.round(-y.min(axis=1) / s)
    start = tf.inverse(s[:, None] * (np.clip(np.rint(y / s[:, None]) + z[:, None], lo, hi) - z[:, None]))
    levels = np.stack([tf.inverse(s[:, None] * (np.full((c, 1), q) - z[:, None]))[:, 0] for q in range(lo, hi + 1)], 1)
    return w, g, start, nearest_level(s, z, tf, lo, hi), levels


def errors(w: np.ndarray, q: np.ndarray, g: np.ndarray) -> np.ndarray:
    e = w - q
    return np.einsum("ij,ij->i", e @ g, e)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.integers(1, 6), n=st.integers(2, 40), bits=st.sampled_from([2, 3, 4]),
       p=st.sampled_from([1.0, 0.5]), block=st.sampled_from([1, 3, 128]))
def test_sweeps_never_raise_the_error_and_stay_on_the_grid(
    seed: int, c: int, n: int, bits: int, p: float, block: int,
) -> None:
    w, g, start, near, levels = problem(seed, c, n, max(1, n // 2), p, bits)
    out = coordinate_descent_round(w, start, g, near, sweeps=3, block=block)
    assert np.all(errors(w, out, g) <= errors(w, start, g) * (1 + 1e-12) + 1e-12)
    dist = np.abs(out[:, :, None] - levels[:, None, :]).min(axis=2)
    assert dist.max() <= 1e-12 * max(1.0, np.abs(levels).max())


@pytest.mark.parametrize(("bits", "p"), [(2, 1.0), (3, 0.5)])
def test_converged_rounding_is_a_coordinate_wise_minimum(bits: int, p: float) -> None:
    w, g, start, near, levels = problem(bits, 4, 12, 30, p, bits)
    out = coordinate_descent_round(w, start, g, near, sweeps=200)
    base = errors(w, out, g)
    assert base.sum() < errors(w, start, g).sum()  # it moved something
    for ch in range(out.shape[0]):
        for j in range(out.shape[1]):
            for level in levels[ch]:
                trial = out.copy()
                trial[ch, j] = level
                assert errors(w, trial, g)[ch] >= base[ch] - 1e-9 * max(1.0, base[ch])


def test_nearest_level_matches_a_search_over_every_level() -> None:
    _, _, _, near, levels = problem(7, 5, 3, 10, 0.5, 3)
    v = np.random.default_rng(1).normal(size=5) * 2.0
    want = levels[np.arange(5), np.abs(levels - v[:, None]).argmin(axis=1)]
    np.testing.assert_allclose(near(v), want, rtol=0, atol=1e-12)


def test_bad_arguments_are_named() -> None:
    w, g, start, near, _ = problem(0, 2, 4, 8, 1.0, 2)
    with pytest.raises(ValueError, match="sweeps must be >= 0"):
        coordinate_descent_round(w, start, g, near, sweeps=-1)
    with pytest.raises(ValueError, match=r"gram \(n, n\)"):
        coordinate_descent_round(w, start, g[:3, :3], near)
    np.testing.assert_array_equal(coordinate_descent_round(w, start, g, near, sweeps=0), start)


def test_one_gram_per_channel_matches_each_channel_on_its_own() -> None:
    w, _, start, _, _ = problem(3, 5, 9, 20, 1.0, 2)
    rng = np.random.default_rng(4)
    grams = np.stack([(x.T @ x) / 20 for x in rng.normal(size=(5, 20, 9))])
    grams[2, :, 4] = grams[2, 4, :] = 0.0  # a dead input of one channel keeps its level
    tf = PowerTransform.fit(w, 1.0)
    s = (w.max(axis=1) - w.min(axis=1)) / 3
    z = np.round(-w.min(axis=1) / s)
    together = coordinate_descent_round(w, start, grams, nearest_level(s, z, tf, 0, 3), sweeps=5)
    for ch in range(5):
        one = slice(ch, ch + 1)
        alone = coordinate_descent_round(w[one], start[one], grams[ch],
                                         nearest_level(s[one], z[one], PowerTransform(1.0, tf.m[one]), 0, 3), sweeps=5)
        np.testing.assert_allclose(together[one], alone, rtol=0, atol=1e-12)
    assert together[2, 4] == start[2, 4]
