"""``benchmarks.harness.markdown``: tables and replacing one generated block of a doc."""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness.markdown import OBSERVERS_HEADER, md_table, write_section


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


def test_observer_doc_blocks_are_written_as_before(tmp_path: Path) -> None:
    """The observer benchmarks' former own writer: header ``# Observer results``, block appended."""
    doc = tmp_path / "o.md"
    write_section(doc, "speed", "| a |", header=OBSERVERS_HEADER)
    assert doc.read_text() == "# Observer results\n\n<!-- BEGIN speed -->\n| a |\n<!-- END speed -->\n"


def test_md_table() -> None:
    table = md_table(["x", "y"], [[1, 2.5]])
    assert table.splitlines() == ["| x | y |", "| :--- | ---: |", "| 1 | 2.5 |"]
