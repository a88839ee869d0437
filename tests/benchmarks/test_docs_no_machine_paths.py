"""Docs carry no absolute machine path: every path is relative to the repository or names an
environment variable, in the checked-in docs (what the accuracy-table generator writes:
``accuracy_table/test_doc.py``)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# a POSIX absolute path under a machine folder, or a Windows drive path
MACHINE_PATH = re.compile(r"(?<![\w.~$/-])/(?:work|root|tmp|home|Users|mnt|opt|var|srv|scratch|data)/"
                          r"|\b[A-Za-z]:\\")


def _doc_files() -> list[Path]:
    files = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    assert len(files) > 5 and all(f.is_file() for f in files)
    return files


def test_docs_and_readme_have_no_machine_paths() -> None:
    hits = [f"{f.relative_to(ROOT)}:{i}: {line.strip()[:120]}"
            for f in _doc_files()
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
            if MACHINE_PATH.search(line)]
    assert not hits, "absolute machine paths in docs (use paths relative to the repository):\n" + "\n".join(hits)


def test_pattern_catches_machine_paths_only() -> None:
    assert MACHINE_PATH.search("(`/work/shared/models`, ...)")
    assert MACHINE_PATH.search("see /root/x.md") and MACHINE_PATH.search("in /tmp/abc")
    assert MACHINE_PATH.search("C:\\Users\\me\\models")
    assert not MACHINE_PATH.search("`../shared/models` or `$REQUANT_MODELS_DIR/models`")
    assert not MACHINE_PATH.search("docs/img/a.png and benchmarks/results/x.json")
