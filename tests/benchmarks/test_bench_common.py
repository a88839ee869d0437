"""``benchmarks/common.py`` and the claim / table logic of the benchmark scripts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import accuracy_table as at
from benchmarks.common import (
    Evaluator,
    Images,
    ResultCache,
    apply_per_layer,
    md_table,
    resnet50_shapes,
    resnet50_weights,
    write_section,
)
from benchmarks.convexity import plain_golden, significant_minima


def test_resnet50_shapes_match_torchvision_resnet50() -> None:
    shapes = resnet50_shapes()
    assert len(shapes) == 54
    # torchvision's resnet50 has 25,557,032 parameters: 25,502,912 conv/fc weights + fc bias
    # (1,000) + BN affine (53,120)
    assert sum(int(np.prod(s)) for _, s in shapes) == 25_502_912
    assert shapes[0] == ("conv1", (64, 3, 7, 7)) and shapes[-1] == ("fc", (1000, 2048))
    assert dict(shapes)["layer4.0.downsample.0"] == (2048, 1024, 1, 1)
    small = resnet50_weights(seed=0, scale_down=16)
    again = resnet50_weights(seed=0, scale_down=16)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(small, again, strict=True))


def test_write_section_replaces_only_its_block(tmp_path: Path) -> None:
    doc = tmp_path / "r.md"
    write_section(doc, "a", "first A", header="# Title", order=("a", "b"))
    write_section(doc, "b", "first B")
    write_section(doc, "a", "second A")
    text = doc.read_text()
    assert text.startswith("# Title")
    assert "second A" in text and "first A" not in text and "first B" in text
    assert text.index("<!-- BEGIN a -->") < text.index("<!-- BEGIN b -->")
    write_section(doc, "c", "new block")
    assert doc.read_text().rstrip().endswith("<!-- END c -->")


def test_md_table_and_cache(tmp_path: Path) -> None:
    table = md_table(["x", "y"], [[1, 2.5]])
    assert table.splitlines() == ["| x | y |", "| :--- | ---: |", "| 1 | 2.5 |"]
    cache = ResultCache(tmp_path / "c.json")
    cache.put({"b": 1, "a": 2}, {"acc": 50.0})
    assert ResultCache(tmp_path / "c.json").get({"a": 2, "b": 1}) == {"acc": 50.0}


def test_onnx_runtime_engine_agrees_with_torch() -> None:
    pytest.importorskip("onnxruntime")
    from requant_plugin.zoo import resnet20

    torch.manual_seed(0)
    model = resnet20().eval()
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    images = Images(x.numpy(), pred.astype(np.int64))  # labels = torch's own predictions
    ev = Evaluator(images, "ort", batch_size=32)
    assert ev.accuracy(model) == pytest.approx(100.0, abs=100.0 / 64 + 1e-9)
    assert ev.accuracy(model, "torch") == 100.0


def test_apply_per_layer_copies_and_folds() -> None:
    from requant_plugin.zoo import resnet20

    model = resnet20().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = apply_per_layer(model, lambda name, w, ax: torch.zeros_like(w), fold_bn=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    assert all(
        float(m.weight.detach().abs().sum()) == 0.0 for m in out.modules() if isinstance(m, torch.nn.Conv2d)
    )
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in out.modules())


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


def _fake_runner(tmp_path: Path, accs: dict[tuple[str, str, int], float]) -> at.Runner:
    images = Images(np.zeros((10, 3, 32, 32), np.float32), np.zeros(10, np.int64))
    runner = at.Runner(Evaluator(images), ResultCache(tmp_path / "acc.json"))
    for (model, method, bits), acc in accs.items():
        cfg = at.Config(model, method, bits)
        runner.cache.put(cfg.key(images.n, "ort"), {"acc": acc})
    return runner


def test_claims_fail_when_min_max_wins(tmp_path: Path) -> None:
    good = {
        ("resnet20", "requant_sqrt", 4): 84.0,
        ("resnet20", "minmax", 4): 80.0,
        ("resnet20", "requant", 4): 83.0,
        ("resnet20", "modelopt_mse", 4): 81.0,
    }
    results = at.check_claims(_fake_runner(tmp_path / "g", good), ("resnet20",))
    assert results and all(ok for _, ok, _ in results)
    bad = dict(good)
    bad[("resnet20", "minmax", 4)] = 85.0
    results = at.check_claims(_fake_runner(tmp_path / "b", bad), ("resnet20",))
    assert not all(ok for _, ok, _ in results)


def test_tables_show_peer_wins(tmp_path: Path) -> None:
    accs = {
        ("resnet20", "fp32", 32): 86.9,
        ("resnet20", "requant", 4): 83.0,
        ("resnet20", "requant_sqrt", 4): 84.0,
        ("resnet20", "aciq", 4): 84.5,
    }
    runner = _fake_runner(tmp_path, accs)
    table = at.grid_table(runner, ("resnet20",), (4,), ("aciq", "requant", "requant_sqrt"), False, False)
    assert "**84.50**" in table and "| 84.00 |" in table.replace("**", "")
    wins = at.peer_wins(runner, ("resnet20",), (4,), ("aciq", "requant", "requant_sqrt"), False, False)
    assert len(wins) == 1 and "ACIQ" in wins[0]
