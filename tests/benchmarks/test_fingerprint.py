"""``benchmarks.fingerprint``: hashes per library digest, and the comparison that says whether a change
reproduces an earlier digest's results bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.fingerprint import compare
from requant_plugin.data import cifar10_available
from requant_plugin.zoo import default_weights_path

ROOT = Path(__file__).resolve().parents[2]


def test_compare_names_the_configurations_that_differ() -> None:
    store = {"new": {"a": "1", "b": "2"}, "same": {"a": "1", "b": "2"}, "other": {"a": "1", "b": "3", "c": "4"}}
    lines = compare(store, "new")
    assert "new vs same: identical (2 of 2 shared configurations match)" in lines
    assert "new vs other: differs (1 of 2 shared configurations match) (differ: ['b'])" in lines


def test_compare_without_shared_configurations_is_not_identical() -> None:
    assert compare({"new": {"a": "1"}, "old": {"b": "1"}}, "new") == [
        "new vs old: differs (0 of 0 shared configurations match) (differ: [])"]


@pytest.mark.skipif(not cifar10_available() or default_weights_path("resnet20") is None
                    or not default_weights_path("resnet20").is_file(),  # type: ignore[union-attr]
                    reason="shared CIFAR-10 and ResNet-20 not found")
def test_a_run_reproduces_its_own_hash_and_flags_a_different_one(tmp_path: Path) -> None:
    store = tmp_path / "fp.json"
    cmd = [sys.executable, "-m", "benchmarks.fingerprint", "--configs", "resnet20 W4 beyond", "--store", str(store)]
    store.write_text(json.dumps({"olddigest": {"resnet20 W4 beyond": "0"}}))
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "vs olddigest: differs (0 of 1 shared configurations match)" in first.stdout
    data = json.loads(store.read_text())
    (current,) = [d for d in data if d != "olddigest"]
    data["copy"] = dict(data[current])  # a digest with the very same results
    store.write_text(json.dumps(data))
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{current} vs copy: identical (1 of 1 shared configurations match)" in second.stdout
