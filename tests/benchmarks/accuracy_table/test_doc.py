"""``benchmarks.accuracy_table.doc``: the Setup section is machine independent and is what
docs/results.md carries."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from benchmarks.accuracy_table import CODE, setup_text

ROOT = Path(__file__).resolve().parents[3]
# a POSIX absolute path under a machine folder, or a Windows drive path
MACHINE_PATH = re.compile(r"(?<![\w.~$/-])/(?:work|root|tmp|home|Users|mnt|opt|var|srv|scratch|data)/"
                          r"|\b[A-Za-z]:\\")


def test_accuracy_table_setup_section_is_machine_independent() -> None:
    text = setup_text(SimpleNamespace(codes_used=lambda: {CODE}))  # type: ignore[arg-type]
    assert not MACHINE_PATH.search(text), text
    assert "../shared/models" in text and "$REQUANT_MODELS_DIR" in text
    assert "every `.py` file of `requant_plugin`" in text and f"now {CODE}" in text
    doc = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    for line in text.splitlines()[:-1]:  # the last line records the code digest of the run
        assert line in doc, f"docs/results.md is not what the generator writes: {line!r}"
