"""docs/lightning.md's usage block runs verbatim; integrations/lightning_resnet20.py on a subset."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from requant_plugin.data import evaluate_accuracy

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "lightning.md"
SCRIPT = ROOT / "integrations" / "lightning_resnet20.py"


def _usage_block() -> str:
    text = DOC.read_text()
    usage = text.split("## Usage", 1)[1]
    match = re.search(r"```python\n(.*?)```", usage, re.S)
    assert match is not None, "no python block under '## Usage'"
    return match.group(1)


def test_usage_block_runs_verbatim(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _usage_block()
    assert "REQuantCalibration(" in code and "trainer.test(" in code
    ns: dict = {"__name__": "lightning_usage_example"}
    exec(compile(code, str(DOC), "exec"), ns)
    res = ns["results"][0]
    assert {"test_acc", "requant/fp32_acc", "requant/quant_acc", "requant/top1_agreement"} <= set(res)
    assert res["test_acc"] == pytest.approx(res["requant/quant_acc"], abs=1e-6)
    assert res["requant/fp32_acc"] > 0.85 and res["requant/fp32_acc"] - res["test_acc"] < 0.03
    assert type(ns["module"].model).__name__ == "SmallCNN"
    assert "test_acc" in capsys.readouterr().out


def _load_script():
    spec = importlib.util.spec_from_file_location("lightning_resnet20_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_integration_example_on_a_subset(tmp_path, capsys):
    script = _load_script()
    argv = ["--test-limit", "64", "--calib-batches", "1", "--batch-size", "32",
            "--configs", "W8A8 FX", "W4 weights-only", "--json", str(tmp_path / "r.json")]
    result = script.main(argv)
    rows = {r["config"]: r for r in result["rows"]}
    assert set(rows) == {"W8A8 FX", "W4 weights-only"}
    # FP32 reference outside Lightning, on the same test subset
    args = script._parser().parse_args(argv)
    _, pretrained, data = script.load_setup(args)
    if pretrained is not None:
        fp32 = evaluate_accuracy(pretrained, data.loader("test", 32, limit=64, seed=0))
        assert result["fp32"] == pytest.approx(fp32, abs=1e-4)
    assert result["test_images"] == 64
    assert result["fp32"] - rows["W8A8 FX"]["test_acc"] < 5
    assert result["fp32"] - rows["W4 weights-only"]["test_acc"] < 15
    assert all(r["fp32_acc"] == pytest.approx(result["fp32"]) for r in rows.values())
    out = capsys.readouterr().out
    assert "| W8A8 FX | `fx` |" in out and "Produced by `python integrations/lightning_resnet20.py" in out
    doc = tmp_path / "doc.md"
    doc.write_text(f"a\n{script.DOC_START}\nold\n{script.DOC_END}\nb\n")
    script.update_doc(str(doc), "new table")
    assert doc.read_text() == f"a\n{script.DOC_START}\nnew table\n{script.DOC_END}\nb\n"


def test_doc_results_block_comes_from_the_script():
    text = DOC.read_text()
    block = text.split("<!-- lightning-resnet20:start -->", 1)[1].split("<!-- lightning-resnet20:end -->")[0]
    assert "Produced by `python integrations/lightning_resnet20.py" in block
    assert "| W8A8 pt2e |" in block and "| W4 weights-only |" in block and "| FP32 |" in block
