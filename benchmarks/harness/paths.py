"""Where benchmarks read and write: the repository, its docs, the cached results, the temp
folder of the ``--quick`` modes and the shared data beside the repository."""

from __future__ import annotations

import tempfile
from pathlib import Path

#: the repository root (``benchmarks/harness/paths.py`` -> two folders up)
ROOT = Path(__file__).resolve().parents[2]
#: the library whose sources key the result caches
PACKAGE = ROOT / "requant_plugin"
#: cached per-configuration results (JSON), checked in
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
IMG = DOCS / "img"
#: the integration scripts (``pt2e_quantize.py`` still holds code the benchmarks use)
INTEGRATIONS = ROOT / "integrations"
#: the shared models and data sets beside the repository
SHARED = ROOT.parent / "shared"
#: where ``--quick`` / ``--smoke`` write their docs and results (the checked-in docs stay untouched)
QUICK_OUT = Path(tempfile.gettempdir()) / "requant-bench-quick"
