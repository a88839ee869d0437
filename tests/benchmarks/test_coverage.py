"""CI subset of the coverage matrix (``python -m benchmarks.coverage --quick``): three small
architectures at 32x32, 10 classes, through every path of the library. No cell may be a failure,
and the ok cells must stay close to FP32.

Bounds (max-normalised error ``max|y_q - y_fp| / max|y_fp|`` over 16 random test images, top-1
agreement in % of them), from the measured values in the comments, with margin:

* W8A8 paths (FX, pt2e x86/XNNPACK at W8, ONNX Q/DQ): measured at most MEASURED_W8A8 (error) and
  at least 81 % agreement (13 of 16 images; mobilenet_v3_small FX, the worst cell; the tiny test net
  gives 0.02-0.04); the bound is 3x the error and 50 % agreement: a wrong scale, a skipped
  requantization or a broken Q/DQ placement gives errors of order 1 (the output range itself) and
  chance-level agreement (10 %), so the bounds separate them clearly from 16-image noise.
* W4 paths (weights-only W4 recipes, pt2e W4A8): random-weight nets at 4 bits move the logits a lot
  (measured up to MEASURED_W4, agreement down to 6 %: the 10 logits of a random net are close, so
  argmax flips); the bound only catches a broken result (error above 1: the deviation exceeds the
  whole FP32 output range), and top-1 agreement is not asserted there.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest

from benchmarks.coverage import FAILURE, OK, PATHS, W8A8_PATHS, Settings, run_matrix
from benchmarks.coverage.cli import QUICK_ARCHS, QUICK_SIZE
from benchmarks.harness.cache import ResultCache
from benchmarks.harness.runtime import quiet_warnings

pytest.importorskip("torchao")
pytest.importorskip("onnxruntime")

#: measured on the CI subset (see the module docstring); bounds below
MEASURED_W8A8 = 0.097
MEASURED_W4 = 0.55
W8A8_MAX_ERR = 0.3
W8A8_MIN_AGREE = 50.0
W4_MAX_ERR = 1.0


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import torch

    torch.set_num_threads(1)
    cache = ResultCache(Path(tmp_path_factory.mktemp("coverage")) / "coverage.json")
    base = Settings(QUICK_SIZE, batches=2, batch_size=4, test=16, seed=0, num_classes=10)
    start = time.perf_counter()
    with warnings.catch_warnings():  # pytest turns warnings into errors; the hosts' deprecation chatter is not ours
        quiet_warnings()
        m = run_matrix(QUICK_ARCHS, list(PATHS), dict.fromkeys(QUICK_ARCHS, QUICK_SIZE), cache, base=base)
    print(f"coverage CI subset: {time.perf_counter() - start:.1f} s")
    return m


def test_every_cell_ran_and_none_is_a_failure(matrix) -> None:  # type: ignore[no-untyped-def]
    assert len(matrix.cells) == len(QUICK_ARCHS) * len(PATHS)
    bad = {k: r["message"] for k, r in matrix.cells.items() if r["status"] == FAILURE}
    assert not bad, f"failing cells: {bad}"


def test_ok_cells_stay_close_to_fp32(matrix) -> None:  # type: ignore[no-untyped-def]
    far = {}
    for (arch, path), r in matrix.cells.items():
        if r["status"] != OK:
            continue
        if path in W8A8_PATHS:
            if r["max_norm"] > W8A8_MAX_ERR or r["agree"] < W8A8_MIN_AGREE:
                far[(arch, path)] = (r["max_norm"], r["agree"])
        elif r["max_norm"] > W4_MAX_ERR:
            far[(arch, path)] = (r["max_norm"], r["agree"])
    assert not far, f"cells far from FP32 (max-normalised error, top-1 agreement %): {far}"
