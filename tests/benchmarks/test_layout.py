"""The benchmarks are a package: every benchmark runs as ``python -m benchmarks.<name>``, nothing
edits ``sys.path``, functions stay small, and every command the docs show names a benchmark."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ("accuracy_table", "activation_observer_speed", "activation_output_error", "beyond_paper",
              "convexity", "coverage", "dev_split", "fingerprint",
              "fx_flow_cost", "heldout_mbconv", "heldout_vgg", "imagenet_beyond", "imagenet_cost",
              "imagenet_export", "layer_groups", "mixed_precision", "mobilenetv2",
              "observers_accuracy", "plot_algorithm", "refine_layers", "residual_error", "results_peers", "run_all",
              "scale_floor",
              "search_cost",
              "search_quality",
              "tensorrt_export", "train_mobilenetv2")
MAX_PARAMS = 8


def _sources() -> list[Path]:
    return [*sorted((ROOT / "benchmarks").rglob("*.py")), *sorted((ROOT / "tests" / "benchmarks").rglob("*.py"))]


def test_no_sys_path_edits() -> None:
    edits = [f"{p.relative_to(ROOT)}:{n.lineno}" for p in _sources() for n in ast.walk(ast.parse(p.read_text()))
             if isinstance(n, ast.Attribute) and n.attr == "path" and isinstance(n.value, ast.Name)
             and n.value.id == "sys"]
    assert not edits, f"sys.path used (import the package instead): {edits}"


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_runs_as_a_module(name: str) -> None:
    spec = importlib.util.find_spec(f"benchmarks.{name}")
    assert spec is not None and spec.origin is not None
    if spec.submodule_search_locations:  # a package: ``python -m`` runs its __main__
        main = Path(spec.origin).parent / "__main__.py"
        assert main.is_file(), f"benchmarks/{name}/ has no __main__.py"
        text = main.read_text()
    else:
        text = Path(spec.origin).read_text()
    assert 'if __name__ == "__main__":' in text


def test_functions_take_at_most_eight_parameters() -> None:
    wide = []
    for p in sorted((ROOT / "benchmarks").rglob("*.py")):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                a = n.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.arg not in ("self", "cls")]
                if len(names) > MAX_PARAMS:
                    wide.append(f"{p.relative_to(ROOT)}:{n.name} ({len(names)})")
    assert not wide, f"functions with more than {MAX_PARAMS} parameters: {wide}"


def test_docs_show_the_module_commands() -> None:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    old = [f"{f.relative_to(ROOT)}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
           if re.search(r"python\s+benchmarks/", line)]
    assert not old, f"benchmark commands in the old script form (use python -m benchmarks.<name>): {old}"
    named = {m for f in files for m in re.findall(r"python -m benchmarks\.(\w+)", f.read_text())}
    assert named and named <= set(BENCHMARKS), f"unknown benchmarks in the docs: {named - set(BENCHMARKS)}"
