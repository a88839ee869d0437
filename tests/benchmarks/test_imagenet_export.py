"""``python -m benchmarks.imagenet_export`` on a tiny ResNet-50 writes its doc section with every
phase timed and the export verified."""

from __future__ import annotations

from pathlib import Path

from benchmarks import imagenet_export


def test_imagenet_export_quick_writes_the_section(tmp_path: Path) -> None:
    argv = ["--quick", "--images", "4", "--size", "32", "--verify-images", "2", "--out", str(tmp_path)]
    assert imagenet_export.main(argv) == 0
    text = (tmp_path / "imagenet-cost.md").read_text()
    assert "<!-- BEGIN imagenet-export -->" in text
    row = next(line for line in text.splitlines() if line.startswith("| resnet50 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-1] == "ok"  # onnx checker and TensorRT rules passed
    load, weights, hists, _rest, export, verify = map(float, cells[1:7])
    assert min(load, weights, hists, export, verify) >= 0 and export >= load + weights + hists - 0.2
    assert "python -m benchmarks.imagenet_export --quick" in text
