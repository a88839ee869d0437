"""Every example in README.md and docs/*.md runs.

* ```` ```python ```` blocks run in order, one namespace per file (a page can build up an
  example), with the working directory in a temporary folder;
* ```` ```sh ```` / ```` ```bash ```` / ```` ```console ```` blocks: each ``requant ...`` (or
  ``python -m requant_plugin ...``) line runs through the CLI (exit status 0 expected) and each
  ``make TARGET`` line is checked with ``make -n TARGET`` (the target exists and its recipe
  expands); other commands (``pip``, ``trtexec``, ...) are not run;
* a block is skipped only when the line just before its opening fence is ``<!-- skip-test -->``.

A block that needs a module that is not there fails with the module's name: examples are not
skipped silently.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from requant_plugin.cli import main

ROOT = Path(__file__).resolve().parents[2]
SKIP_MARK = "<!-- skip-test -->"
SHELL_LANGS = {"sh", "bash", "console", "shell"}
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: language, first code line (1-based), code, skip marker."""

    lang: str
    line: int
    code: str
    skipped: bool


def extract_blocks(text: str) -> list[Block]:
    """Fenced blocks of a markdown text, with the skip marker of the line before each fence."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        lang = match.group(1).lower()
        prev = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        start = i + 1
        j = start
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        blocks.append(Block(lang, start + 1, "\n".join(lines[start:j]) + "\n", prev == SKIP_MARK))
        i = j + 1
    return blocks


def markdown_files() -> list[Path]:
    files = sorted((ROOT / "docs").glob("*.md"))
    readme = ROOT / "README.md"
    return ([readme] if readme.is_file() else []) + files


def _run_shell_line(line: str, where: str) -> None:
    words = shlex.split(line, comments=True)
    if not words:
        return
    head = words[0]
    if head.endswith("requant") or words[:3] == ["python", "-m", "requant_plugin"]:
        args = words[1:] if head.endswith("requant") else words[3:]
        try:
            status = main(args)
        except SystemExit as exc:
            status = int(exc.code or 0)
        assert status == 0, f"{where}: `{line}` exited with status {status}"
    elif head == "make":
        make = shutil.which("make")
        if make is None:
            pytest.fail(f"{where}: `{line}` needs make, which is not installed")
        proc = subprocess.run([make, "-n", "-C", str(ROOT), *words[1:]], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, f"{where}: `make -n {' '.join(words[1:])}` failed: {proc.stderr}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [b for b in extract_blocks(path.read_text()) if not b.skipped
              and (b.lang == "python" or b.lang in SHELL_LANGS)]
    if not blocks:
        pytest.skip(f"{path.name} has no tested example")
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(2)
    namespace: dict[str, object] = {"__name__": f"example_{path.stem}"}
    rel = path.relative_to(ROOT).as_posix()
    for block in blocks:
        where = f"{rel}, block at line {block.line}"
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # examples must run; warnings are tested elsewhere
            if block.lang == "python":
                try:
                    exec(compile(block.code, where, "exec"), namespace)
                except Exception as exc:
                    raise AssertionError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
            else:
                for line in block.code.splitlines():
                    _run_shell_line(line, where)


def test_readme_starts_with_the_two_commands() -> None:
    readme = ROOT / "README.md"
    assert readme.is_file(), "README.md is missing"
    blocks = extract_blocks(readme.read_text())
    assert blocks, "README.md has no code block"
    first = [shlex.split(ln, comments=True) for ln in blocks[0].code.splitlines()]
    assert [w for w in first if w][:2] == [["make", "demo"], ["make", "test"]]


def test_extract_blocks_honours_skip_marker() -> None:
    text = ("intro\n\n```python\nx = 1\n```\n\n<!-- skip-test -->\n```python\nraise SystemExit\n```\n"
            "```sh\nls\n```\n")
    blocks = extract_blocks(text)
    assert [(b.lang, b.line, b.skipped) for b in blocks] == [("python", 4, False), ("python", 9, True),
                                                             ("sh", 12, False)]
    assert blocks[0].code == "x = 1\n"
