"""Golden-section search for one scalar (pure Python/NumPy), for objectives too costly to batch.

The core's :func:`~.search.golden_search` evaluates many candidates of many rows at once; a
network-level objective (one forward pass of a whole model per candidate) has one row and
expensive, sequential evaluations. This searches ``x`` in ``[lo, hi]`` for a unimodal ``f``:
each step keeps the golden-ratio sub-interval holding the lower of its two interior points
(one new evaluation per step, the interval shrinks by ``0.618``), until it is shorter than
``tol``; then ``hi`` is evaluated too and the best of the two final interior points and ``hi``
is returned (the best interior point seen is always one of the final two; ties go to the
smaller ``x``). So the result is never worse than ``f(hi)``, e.g. "no change" at ``hi = 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .search import INV_PHI


@dataclass(frozen=True)
class ScalarResult:
    """The best point of a scalar search and every point evaluated, in order."""

    x: float
    fx: float
    points: tuple[tuple[float, float], ...]

    @property
    def evaluations(self) -> int:
        return len(self.points)


def golden_section(f: Callable[[float], float], lo: float, hi: float, *, tol: float = 1e-3) -> ScalarResult:
    """Minimise a unimodal ``f`` on ``[lo, hi]`` (``hi`` evaluated too); see the module docstring."""
    if not (lo < hi) or tol <= 0:
        raise ValueError(f"need lo < hi and tol > 0, got lo={lo}, hi={hi}, tol={tol}")
    seen: list[tuple[float, float]] = []

    def ev(x: float) -> float:
        fx = float(f(x))
        seen.append((x, fx))
        return fx

    a, b = lo, hi
    c, d = b - INV_PHI * (b - a), a + INV_PHI * (b - a)
    fc, fd = ev(c), ev(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - INV_PHI * (b - a)
            fc = ev(c)
        else:
            a, c, fc = c, d, fd
            d = a + INV_PHI * (b - a)
            fd = ev(d)
    fx, x = min((fc, c), (fd, d), (ev(hi), hi))
    return ScalarResult(x, fx, tuple(seen))


__all__ = ["ScalarResult", "golden_section"]
