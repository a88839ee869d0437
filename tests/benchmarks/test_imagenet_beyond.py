"""``python -m benchmarks.imagenet_beyond`` on a tiny ResNet-50 writes its doc section, the stream
and the per-layer passes both timed."""

from __future__ import annotations

from pathlib import Path

from benchmarks import imagenet_beyond


def test_imagenet_beyond_quick_writes_the_section(tmp_path: Path) -> None:
    argv = ["--quick", "--images", "4", "--size", "32", "--compare-images", "2", "--out", str(tmp_path)]
    assert imagenet_beyond.main(argv) == 0
    text = (tmp_path / "imagenet-cost.md").read_text()
    assert "<!-- BEGIN imagenet-beyond -->" in text and "<!-- BEGIN imagenet-cost -->" in text
    for label in ("one float forward pass, 4 images", 'quantize_weights(m, "beyond", bits=4), 4 images',
                  "of which per-layer solve", "beyond, 2 images, one-pass stream",
                  "beyond, 2 images, per-layer passes"):
        assert label in text
    assert "python -m benchmarks.imagenet_beyond --quick" in text
    assert "is for the full-width ResNet-50" in text  # no verdict on the quick model
