"""integrations/pt2e_quantize.py on a tiny subset (digits SmallCNN, so no shared data is needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")

SCRIPT = Path(__file__).resolve().parents[2] / "integrations" / "pt2e_quantize.py"


def _load(name: str = "pt2e_quantize_script") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_pt2e_script_runs_on_a_tiny_subset(capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load()
    assert mod.main(["--model", "smallcnn", "--bits", "4", "--act-bits", "4", "--calib-batches", "2",
                     "--batch-size", "16", "--test-limit", "120", "--variants"]) == 0
    out = capsys.readouterr().out
    assert "W4A4" in out
    for label in ("FP32", "torchao default observers", "REQuant", "REQuant acts + min-max weights",
                  "REQuant, sqrt-space weight range"):
        assert label in out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith(("torchao default", "REQuant "))]
    assert rows and all(int(r[-1]) > 0 for r in rows)  # q/dq nodes present in every converted model


def test_pt2e_script_refine_fits_a_factor_per_requant_config(capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load("pt2e_quantize_script_refine")
    assert mod.main(["--model", "smallcnn", "--bits", "4", "--act-bits", "4", "--calib-batches", "2",
                     "--batch-size", "16", "--test-limit", "120", "--refine"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("[refine] activation range factor")]
    assert len(lines) == 1  # REQuant only: the default observers have no range factor
    before, after = (float(v) for v in lines[0].split("output MSE ")[1].split(" (")[0].split(" -> "))
    assert after <= before


def test_pt2e_script_uses_the_flow_helpers() -> None:
    """The script's pt2e flow is the package's (the tests call that one directly)."""
    from requant_plugin.observers import flows

    mod = _load("pt2e_quantize_script_names")
    assert mod.quantize_pt2e is flows.quantize_pt2e and mod.count_qdq is flows.count_qdq


def test_pt2e_script_residual_bits_row(capsys: pytest.CaptureFixture[str]) -> None:
    """``--residual-bits 8`` adds one REQuant row whose quantizer gives every residual add's quantized
    operands 256 codes (a ResNet-20 graph at A4), while the plain REQuant row shares the 16-code input."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from requant_plugin.zoo.resnet_cifar import resnet20

    mod = _load("pt2e_quantize_script_residual")
    assert mod.main(["--model", "smallcnn", "--bits", "4", "--act-bits", "4", "--calib-batches", "2",
                     "--batch-size", "16", "--test-limit", "120", "--residual-bits", "8"]) == 0
    assert "REQuant, residual adds' operands 8-bit" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        mod.main(["--model", "smallcnn", "--residual-bits", "1"])
    capsys.readouterr()

    torch.manual_seed(0)
    net = resnet20().eval()
    x = torch.randn(4, 3, 32, 32)
    rows = {key: q for key, _label, q in mod.configurations(4, 4, "x86_inductor", residual_bits=8)}
    widths = {}
    for key in ("requant", "requant_res8"):
        prepared = prepare_pt2e(torch.export.export(net, (x,)).module(), rows[key])
        with torch.no_grad():
            prepared(x)
        q = convert_pt2e(prepared)
        widths[key] = {int(a.args[4]) - int(a.args[3]) + 1
                       for n in q.graph.nodes if n.op == "call_function" and "aten.add" in str(n.target)
                       for a in n.args[:2]
                       if isinstance(a, torch.fx.Node) and "dequantize_per_tensor" in str(a.target)}
    assert widths == {"requant": {16}, "requant_res8": {256}}
