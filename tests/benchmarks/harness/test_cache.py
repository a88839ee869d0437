"""``benchmarks.harness.cache``: the result cache, and the code digest of the WHOLE package
(every ``.py`` file, path and contents) that marks cached results stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness.cache import ResultCache, code_digest, package_files, stale_warning
from benchmarks.harness.paths import PACKAGE


def _package(root: Path) -> Path:
    pkg = root / "pkg"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "grid.py").write_text("A = 1\n")
    (pkg / "range.py").write_text("B = 2\n")
    return pkg


def test_result_cache_round_trip(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "c.json")
    cache.put({"b": 1, "a": 2}, {"acc": 50.0})
    assert ResultCache(tmp_path / "c.json").get({"a": 2, "b": 1}) == {"acc": 50.0}
    (tmp_path / "bad.json").write_text("{not json")
    assert ResultCache(tmp_path / "bad.json").data == {}


def test_two_runs_filling_one_cache_keep_each_others_results(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    ResultCache(path).put({"cell": 0}, {"acc": 1.0})
    first, second = ResultCache(path), ResultCache(path)  # two runs started on the same file
    first.put({"cell": 1}, {"acc": 2.0})
    second.put({"cell": 2}, {"acc": 3.0})
    second.put({"cell": 0}, {"acc": 4.0})  # a refreshed cell
    first.put({"cell": 3}, {"acc": 5.0})  # first never saw the refresh: the file's value stays
    final = ResultCache(path)
    assert {k: v["acc"] for k, v in final.data.items()} == {
        ResultCache.key({"cell": i}): a for i, a in enumerate((4.0, 2.0, 3.0, 5.0))}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.json.lock"]  # no temp file left


def test_digest_covers_every_module_of_the_package(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    base = code_digest(pkg)
    assert len(base) == 10 and int(base, 16) >= 0
    assert code_digest(pkg) == base  # deterministic
    (pkg / "notes.txt").write_text("not code")
    assert code_digest(pkg) == base  # only .py files count
    (pkg / "core" / "grid.py").write_text("A = 3\n")
    edited = code_digest(pkg)
    assert edited != base
    (pkg / "new.py").write_text("")
    added = code_digest(pkg)
    assert added != edited
    (pkg / "core" / "grid.py").rename(pkg / "grid.py")  # same bytes, another place
    assert code_digest(pkg) != added


def test_digest_refuses_a_missing_or_empty_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no package folder"):
        code_digest(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.py file"):
        code_digest(tmp_path / "empty")


def test_digest_of_the_library_lists_all_its_modules() -> None:
    files = package_files(PACKAGE)
    assert len(files) == len(list(PACKAGE.rglob("*.py")))
    rel = [f.relative_to(PACKAGE).as_posix() for f in files]
    assert rel == sorted(rel) and "__init__.py" in rel and any(r.startswith("core/") for r in rel)
    assert code_digest() == code_digest(PACKAGE)


def test_stale_warning_names_other_digests() -> None:
    assert stale_warning(["abc", "abc"], "abc", "results") is None
    assert stale_warning([], "abc", "results") is None
    msg = stale_warning(["abc", "old1", "old1", None], "abc", "REQuant results")
    assert msg is not None and msg.startswith("WARNING: 3 cached REQuant results")
    assert "2 with old1" in msg and "1 with no digest" in msg and "now abc" in msg and "--refresh-stale" in msg
