"""``benchmarks.refine_layers``: the doc section reads the two refinements of each model side by side."""

from __future__ import annotations

from benchmarks.refine_layers import FACTORS, Outcome, summarise
from requant_plugin.refine import RangeRefinement


def _outcome(error: float, held: float, agree: float, top1: float, secs: float, kept: int) -> Outcome:
    factors = {f"activation_post_process_{i}": 0.8 for i in range(kept)}
    res = RangeRefinement(0.95, error, 4.0, 22, ((1.0, 4.0), (0.95, error)), layer_factors=factors,
                          error_shared=3.0 if kept else None)
    return Outcome(res, secs, held, agree, top1)


def test_summary_compares_per_layer_with_shared() -> None:
    results = {"resnet20": {"shared": _outcome(3.0, 3.5, 0.92, 84.9, 12.0, 0),
                            "per layer": _outcome(2.8, 3.15, 0.93, 85.3, 36.0, 4)}}
    text = summarise(results, {"resnet20": 86.94}, 512, 2000, 10000, "python -m benchmarks.refine_layers", 2)
    assert "Command: `python -m benchmarks.refine_layers`" in text
    assert f"`layer_factors={FACTORS}`" in text and "over 2 batches" in text
    assert "| resnet20 | shared | 0.950 | - | 3.0000 | 3.5000 | 92.00 | 84.90 (-2.04) | 12.0 |" in text
    assert "| resnet20 | per layer | 0.950 | 4 | 2.8000 | 3.1500 | 93.00 | 85.30 (-1.64) | 36.0 |" in text
    assert ("- resnet20: per layer vs shared: held-out output MSE -10.0%, agreement +1.00 points, "
            "test top-1 +0.40, refinement time x3.0") in text
