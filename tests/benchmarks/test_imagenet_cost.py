"""``python -m benchmarks.imagenet_cost`` on a tiny ResNet-50 writes its doc section."""

from __future__ import annotations

from pathlib import Path

from benchmarks import imagenet_cost


def test_imagenet_cost_quick_writes_the_section(tmp_path: Path) -> None:
    assert imagenet_cost.main(["--quick", "--base", "4", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "imagenet-cost.md").read_text()
    assert "<!-- BEGIN imagenet-cost -->" in text
    for label in ("estimate_range, per tensor", "estimate_range, per channel", "quantize_weights(m, 4) (paper)",
                  "per_channel=True", "data-free"):
        assert label in text
    assert "python -m benchmarks.imagenet_cost --quick" in text
    assert "torch threads 2" in text
    assert "Per-channel search / per-tensor search over the same weights: **" in text
    assert "(issue 17's target: within 3x, " in text
