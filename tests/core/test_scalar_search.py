"""golden_section: the scalar search against the closed-form minimiser of known functions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requant_plugin.core.scalar_search import golden_section


@settings(max_examples=60, deadline=None)
@given(c=st.floats(-1.0, 2.0), lo=st.floats(-0.5, 0.4), width=st.floats(0.2, 1.5), tol=st.sampled_from([1e-2, 1e-3]))
def test_finds_the_clamped_minimiser_of_a_parabola(c: float, lo: float, width: float, tol: float) -> None:
    hi = lo + width
    res = golden_section(lambda x: (x - c) ** 2, lo, hi, tol=tol)
    best = min(max(c, lo), hi)
    assert abs(res.x - best) <= tol
    assert res.fx == min(fx for _, fx in res.points)  # the best point seen is among the final ones
    assert hi in {x for x, _ in res.points}  # "no change" (hi) is always evaluated
    # one evaluation per step: the interval shrinks by 0.618 each time
    assert res.evaluations <= 3 + math.ceil(math.log(tol / width) / math.log(0.618)) + 1


def test_an_end_point_wins_when_f_is_monotone() -> None:
    res = golden_section(lambda x: -x, 0.8, 1.0, tol=0.01)
    assert res.x == 1.0 and res.fx == -1.0


@pytest.mark.parametrize(("lo", "hi", "tol"), [(1.0, 1.0, 0.1), (1.0, 0.5, 0.1), (0.0, 1.0, 0.0)])
def test_bad_arguments(lo: float, hi: float, tol: float) -> None:
    with pytest.raises(ValueError, match="lo < hi"):
        golden_section(lambda x: x, lo, hi, tol=tol)
