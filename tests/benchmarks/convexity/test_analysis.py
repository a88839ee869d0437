"""``benchmarks.convexity.analysis``: significant minima of a sampled curve, the plain golden search."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.convexity import plain_golden, significant_minima


def test_significant_minima_and_plain_golden() -> None:
    assert significant_minima(np.array([3.0, 2.0, 1.0, 2.0, 3.0]), 0.0) == 1
    two = np.array([3.0, 1.0, 2.0, 1.5, 3.0])
    assert significant_minima(two, 0.0) == 2
    assert significant_minima(two, 0.6) == 1  # the bump of 0.5 above 1.5 is a ripple at eps 0.6
    assert significant_minima(np.array([2.0, 1.0, 1.0, 1.0, 2.0]), 0.0) == 1  # plateau counts once

    class Quad:
        def __call__(self, a: np.ndarray) -> np.ndarray:
            return (a - 0.37) ** 2

    alpha, _loss, evals = plain_golden(Quad())
    assert alpha == pytest.approx(0.37, abs=1e-4) and evals < 40
