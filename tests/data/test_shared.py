"""find_shared_dir: the environment variable, walking up from the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from requant_plugin.data import SHARED_DIR_ENV, find_shared_dir


def test_find_shared_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SHARED_DIR_ENV, str(tmp_path))
    assert find_shared_dir() == tmp_path.resolve()


def test_find_shared_dir_walks_up_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shared" / "models").mkdir(parents=True)
    work = tmp_path / "repo" / "sub"
    work.mkdir(parents=True)
    monkeypatch.setenv(SHARED_DIR_ENV, str(tmp_path / "does-not-exist"))
    monkeypatch.chdir(work)
    assert find_shared_dir() == (tmp_path / "shared").resolve()


def test_find_shared_dir_ignores_unrelated_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shared").mkdir()  # neither data/cifar10/test.npz nor models/
    monkeypatch.delenv(SHARED_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_shared_dir() != (tmp_path / "shared").resolve()
