"""``requant --help``, ``python -m requant_plugin`` and the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import requant_plugin

SUBCOMMANDS = ("quantize", "demo", "inspect")


def _script() -> Path:
    path = Path(sys.executable).parent / "requant"
    if not path.is_file():
        pytest.skip(f"console script not installed next to {sys.executable} (pip install -e . first)")
    return path


def test_console_script_and_python_m_help() -> None:
    script = subprocess.run([str(_script()), "--help"], capture_output=True, text=True, timeout=120)
    assert script.returncode == 0, script.stderr
    assert script.stdout.startswith("usage: requant ")
    for name in SUBCOMMANDS:
        assert f"    {name} " in script.stdout
    module = subprocess.run([sys.executable, "-m", "requant_plugin", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert module.returncode == 0
    assert module.stdout == script.stdout


def test_version(cli) -> None:
    status, out, _ = cli("--version")
    assert status == 0
    assert out.strip() == f"requant-plugin {requant_plugin.__version__}"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(cli, name: str) -> None:
    status, out, _ = cli(name, "--help")
    assert status == 0
    assert out.startswith(f"usage: requant {name}")


def test_no_subcommand_prints_help_and_exits_2(cli) -> None:
    status, out, _ = cli()
    assert status == 2
    assert "quantize" in out and "demo" in out and "inspect" in out


def test_quantize_help_documents_every_issue_option(cli) -> None:
    _, out, _ = cli("quantize", "--help")
    for option in ("--model", "--weights", "--data", "--bits", "--space", "--per-channel",
                   "--act-bits", "--export", "--report"):
        assert option in out
