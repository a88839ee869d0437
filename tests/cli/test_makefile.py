"""The Makefile behind the README's two commands (checked with ``make -n``, nothing installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def dry_run(*targets: str) -> list[str]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    proc = subprocess.run([make, "-n", "-B", "-C", str(ROOT), *targets], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [ln.strip() for ln in proc.stdout.splitlines()
            if ln.strip() and not ln.startswith("make")]


def test_venv_installs_pinned_cpu_torch_first() -> None:
    assert dry_run("venv") == [
        "python3 -m venv .venv",
        ".venv/bin/pip install torch==2.13.0",
        ".venv/bin/pip install -e '.[all,test,docs,bench]'",
        "touch .venv/.requant-installed",
    ]


def test_demo_and_test_depend_on_the_installed_venv() -> None:
    demo = dry_run("demo")
    assert demo[0] == "python3 -m venv .venv" and demo[-1] == ".venv/bin/requant demo"
    test = dry_run("test")
    assert test[0] == "python3 -m venv .venv" and test[-1] == ".venv/bin/python -m pytest -q -n 2"
