"""The benchmarks' CI modes run end to end as ``python -m benchmarks.<name>`` and their ordering
claims hold.

``run_all --smoke`` runs ``accuracy_table --smoke`` (ResNet-20, 300 test images, W3: min-max vs
REQuant), which checks the claims of the full tables on the subset; ``search_quality --quick``
checks the 0.1 % target of the golden search on ResNet-20; ``convexity --quick`` checks that
REQuant never loses on a unimodal curve. Each exits non-zero when its check fails. The full-size
quick modes (``--quick``, about 2 minutes on a shared 2-core machine) are too slow for the unit suite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from requant_plugin.data import cifar10_available
from requant_plugin.zoo import default_weights_path

ROOT = Path(__file__).resolve().parents[2]


def _models_available() -> bool:
    path = default_weights_path("resnet20")
    return path is not None and path.is_file()


needs_models = pytest.mark.skipif(not _models_available(), reason="shared pretrained ResNet-20 not found")
needs_cifar = pytest.mark.skipif(not cifar10_available(), reason="shared CIFAR-10 arrays not found")


def _run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


@needs_models
@needs_cifar
def test_accuracy_smoke_claims_hold(tmp_path: Path) -> None:
    proc = _run("run_all", "--smoke", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "claim HOLDS: REQuant alpha + sqrt beats min-max" in proc.stdout
    assert "FAILS" not in proc.stdout and "accuracy_table: ok" in proc.stdout
    doc = (tmp_path / "results.md").read_text()
    assert f"python -m benchmarks.accuracy_table --smoke --out {tmp_path}" in doc and "| min-max (alpha = 1) |" in doc


@needs_models
def test_search_quality_and_convexity_quick(tmp_path: Path) -> None:
    proc = _run("search_quality", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "misses 0 per-tensor" in proc.stdout
    assert "<!-- BEGIN search-quality -->" in (tmp_path / "core-results.md").read_text()
    proc = _run("convexity", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "strictly unimodal" in (tmp_path / "results.md").read_text()
