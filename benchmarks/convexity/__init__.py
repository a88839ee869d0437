"""Convexity of L(alpha) on real layers: how often it is unimodal, and what the searches do.

For every Conv/Linear layer of the shared ResNet-20 and ResNet-56 (per tensor, asymmetric,
loss in the original space), bits 2..8 and both spaces (uniform, sqrt), ``L(alpha)`` is
evaluated exactly (core ``objective_for_rows``) on ``alpha = k / 2000``. Reported per bit
width and space:

* strictly unimodal: a single local minimum on the 2000-point curve;
* unimodal up to 0.1 %: every other local minimum is walled off from a lower point by a
  bump smaller than 0.1 % of the global minimum (shallow ripples ignored);
* plain golden-section search (the paper's sketch: bracket [0.05, 1], tol 1e-4, then the
  better of that and alpha = 1) within 0.1 % of the dense optimum;
* REQuant's search (core ``golden_search``: bracketing scan + golden sections + least-squares
  polish) within 0.1 % of the dense optimum.

Plots (``docs/img/convexity_*.png``) show ``L(alpha)`` for a few layers, plain and
transformed, marking where each search stopped: the dense optimum, REQuant, plain golden
section, and the best candidate of the 100-point (torchao-style), 39-multiplier
(ModelOpt-style, multipliers <= 1) and 20-point (Brevitas-style) grids on the same curve.
Writes the ``convexity`` section of ``docs/results.md``. ``--quick``: ResNet-20, bits 3/4/8,
no plots; exits non-zero if REQuant's search misses 0.1 % on a layer where the curve is
unimodal up to 0.1 % (it must never lose there).

Modules: ``analysis`` (curves, minima, searches, the table), ``plot`` (the figures), ``cli``
(``main``).
"""

from __future__ import annotations

from benchmarks.convexity.analysis import analyse, plain_golden, significant_minima

__all__ = ["analyse", "plain_golden", "significant_minima"]
