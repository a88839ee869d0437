"""The MobileNetV2 benchmark: its plan, the depthwise diagnosis against a closed form, the doc's
goal checks, and one cell of each kind measured on a small random-weight run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.harness.data import Images
from benchmarks.harness.evaluate import Evaluator
from benchmarks.mobilenetv2 import doc
from benchmarks.mobilenetv2.cells import Cell, build_ptq, measure, plan
from benchmarks.mobilenetv2.depthwise import diagnose, layer_kind, sqnr_db
from requant_plugin.zoo import load_model, packaged_weights_path


def test_layer_kinds() -> None:
    assert layer_kind(nn.Conv2d(8, 8, 3, groups=8)) == "depthwise"
    assert layer_kind(nn.Conv2d(8, 16, 1)) == "pointwise"
    assert layer_kind(nn.Conv2d(8, 16, 3)) == "conv"
    assert layer_kind(nn.Linear(4, 2)) == "linear"


def test_sqnr_closed_form() -> None:
    w = torch.tensor([1.0, -2.0, 3.0])
    q = w + torch.tensor([0.1, 0.0, -0.1])
    assert sqnr_db(w, q) == pytest.approx(10 * math.log10(14.0 / 0.02))
    assert sqnr_db(w, w) == math.inf


def test_plan_covers_every_kind_and_quick_is_a_subset() -> None:
    full, quick = plan(("mobilenetv2",), False), plan(("mobilenetv2",), True)
    assert set(quick) <= set(full)
    kinds = {c.kind for c in full}
    assert kinds == {"fp32", "weights", "ptq"}
    assert {(c.flow, c.per_channel) for c in full if c.kind == "ptq"} == {
        ("fx", False), ("fx", True), ("pt2e", False), ("pt2e", True)}
    assert {c.bits for c in full if c.method == "beyond"} == {8, 6, 4, 3}
    assert not any(c.method == "requant_refined" for c in quick)


def test_depthwise_diagnosis_shows_the_per_tensor_collapse() -> None:
    """A depthwise layer whose channels differ 100x in scale loses far more SQNR per tensor than per
    channel; per channel min-max equals the closed-form symmetric per-channel quantizer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 1), nn.Conv2d(16, 16, 3, groups=16), nn.Flatten(), nn.LazyLinear(4))
    model(torch.randn(1, 3, 8, 8))
    with torch.no_grad():
        model[1].weight.mul_(torch.logspace(-2, 0, 16).view(16, 1, 1, 1))
    rows = {r["layer"]: r for r in diagnose(model, 8)}
    dw = rows["1"]
    assert dw["kind"] == "depthwise" and dw["spread"] > 5
    assert dw["pc min-max"] > dw["pt min-max"] + 5
    w = model[1].weight.detach()
    scale = w.abs().amax((1, 2, 3), keepdim=True) / 127.5
    q = (w / scale).round().clamp(-128, 127) * scale
    assert dw["pc min-max"] == pytest.approx(sqnr_db(w, q), abs=0.5)
    assert all(r["pt REQuant"] >= r["pt min-max"] - 1e-6 for r in rows.values())


def test_goal_lines_say_met_or_not() -> None:
    m = "mobilenetv2"
    res = {Cell(m, "ptq", "requant", 8, False, "fx"): {"acc": 89.7},
           Cell(m, "ptq", "requant_refined", 8, False, "pt2e"): {"acc": 88.0},
           Cell(m, "weights", "beyond", 4, True): {"acc": 89.2}}
    lines = doc.goals(res, m, 90.0)
    assert any("(fx)" in x and ": met" in x for x in lines)
    assert any("(pt2e)" in x and "NOT met" in x for x in lines)
    assert any("beyond W4" in x and ": met" in x for x in lines)
    assert "89.20" in doc.weights_table(res, m, 90.0)


@pytest.fixture(scope="module")
def small_run() -> tuple[nn.Module, list[torch.Tensor], Evaluator]:
    torch.manual_seed(0)
    model = load_model("mobilenetv2", weights=packaged_weights_path("mobilenetv2"))  # the shipped, trained net
    cal = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    rng = np.random.default_rng(0)
    images = Images(rng.standard_normal((8, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 8))
    return model, cal, Evaluator(images, engine="torch")


@pytest.mark.parametrize("cell", [Cell("mobilenetv2", "weights", "requant_sqrt", 4),
                                  Cell("mobilenetv2", "weights", "beyond", 4, True)], ids=str)
def test_weight_cells_quantize(cell: Cell, small_run: tuple[nn.Module, list[torch.Tensor], Evaluator]) -> None:
    model, cal, ev = small_run
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rec = measure(cell, model, cal, ev)
    assert 0.0 <= rec["acc"] <= 100.0 and rec["quant_s"] >= 0.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("flow", ["fx", "pt2e"])
def test_ptq_cells_convert_to_integer_graphs(flow: str, small_run: tuple[nn.Module, list[torch.Tensor], Evaluator]
                                             ) -> None:
    model, cal, _ = small_run
    for method in ("default", "requant"):
        q, secs = build_ptq(Cell("mobilenetv2", "ptq", method, 8, False, flow), model, cal)
        x = cal[0]
        with torch.no_grad():
            err = (q(x) - model(x)).abs().max() / model(x).abs().max()
        assert secs >= 0.0 and float(err) < 0.5
        if flow == "fx":
            assert any("quantized" in type(m).__module__ for m in q.modules())
        else:
            assert any("quantize_per" in str(n.target) for n in q.graph.nodes)  # type: ignore[union-attr]
