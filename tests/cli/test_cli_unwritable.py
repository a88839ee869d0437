"""``--export`` / ``--report`` into a place that cannot be written: checked before any work,
one line naming the path and the fix, exit status 2 (also when run as root)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from requant_plugin.pipeline import run as pipeline_run


def _unwritable(kind: str, tmp_path: Path) -> Path:
    if kind == "parent-is-a-file":
        blocker = tmp_path / "a_file"
        blocker.write_text("x")
        return blocker / "sub" / "out"
    return Path("/proc/requant-no-such-dir/out")  # /proc refuses new folders, even for root


@pytest.mark.parametrize("option", ["--export", "--report"])
@pytest.mark.parametrize("kind", ["parent-is-a-file", "uncreatable-parent"])
def test_unwritable_output_fails_fast_with_one_line(cli, monkeypatch, tmp_path, option, kind, digits_model):
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pipeline started working before checking the output paths")

    monkeypatch.setattr(pipeline_run, "load_workload", no_work)
    target = _unwritable(kind, tmp_path)
    path = str(target) + (".onnx" if option == "--export" else "")
    start = time.perf_counter()
    status, _, err = cli("quantize", "--model", "small-cnn", "--weights", str(digits_model[0]),
                         "--data", "digits", option, path)
    assert time.perf_counter() - start < 10
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("requant quantize: error: ")
    assert path in lines[0] and option in lines[0] and "writable" in lines[0]
    assert not target.parent.exists() or target.parent == Path("/proc")
