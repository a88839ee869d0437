"""docs/cli.md shows exactly what ``requant ... --help`` prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from requant_plugin.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cli.md"


def help_text(command: str | None) -> str:
    parser = build_parser()
    if command is None:
        return parser.format_help()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    choices = sub.choices
    assert isinstance(choices, dict)
    return str(choices[command].format_help())


def doc_help_blocks() -> dict[str | None, str]:
    blocks = re.findall(r"```text\n(usage: requant.*?)```", DOC.read_text(), re.S)
    out: dict[str | None, str] = {}
    for block in blocks:
        words = block.split()
        command = words[2] if words[2] in ("quantize", "demo", "inspect") else None
        out[command] = block
    return out


@pytest.mark.parametrize("command", [None, "quantize", "demo", "inspect"])
def test_cli_doc_matches_help(command: str | None) -> None:
    blocks = doc_help_blocks()
    assert command in blocks, f"docs/cli.md has no help block for {command or 'requant'}"
    expected = help_text(command)
    assert blocks[command].strip() == expected.strip(), (
        f"docs/cli.md is out of date for `requant {command or ''} --help`; paste this:\n{expected}"
    )
