"""The FX and pt2e examples in docs/observers.md run as written (read from the file, exec'd)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "observers.md"


def _example(tag: str) -> str:
    text = DOC.read_text()
    match = re.search(rf"<!-- example: {tag} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"no '{tag}' example in {DOC}"
    return match.group(1)


def _run(code: str) -> str:
    out = io.StringIO()
    engine = torch.backends.quantized.engine
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(DOC), "exec"), {"__name__": "__docs__"})
    finally:
        torch.backends.quantized.engine = engine
    return out.getvalue()


def test_fx_example() -> None:
    code = _example("fx")
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 14
    assert _run(code).strip() == "ConvReLU2d"


def test_pt2e_example() -> None:
    pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")
    code = _example("pt2e")
    assert _run(code).strip() == "torch.Size([2, 4, 12, 12])"


def test_refine_example() -> None:
    assert _run(_example("refine")).strip() == "True True"
