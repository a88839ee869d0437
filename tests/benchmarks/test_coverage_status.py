"""The coverage matrix's status rule and output metrics, on hand-made exceptions and outputs (fast)."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from benchmarks.coverage.cells import (
    CLEAR,
    FAILURE,
    OK,
    TIMEOUT,
    CellTimeout,
    classify,
    compare,
    layer_names,
    names_layer,
    run_cell,
)
from benchmarks.coverage.models import Tiny, make_inputs
from benchmarks.coverage.paths import CellFailure, Inputs, check_ort
from requant_plugin.deps import MissingDependency, require

NAMES = layer_names(Tiny())


def _raised_by_library(message: str) -> BaseException:
    """An exception raised inside requant_plugin code (``require`` of a missing module is not one
    we want here, so this goes through a library check that raises ValueError with our message)."""
    from requant_plugin.observers.flows import check_fx_model

    bad = nn.Linear(2, 2).double()
    try:
        check_fx_model(bad)
    except TypeError as exc:
        return type(exc)(message).with_traceback(exc.__traceback__)
    raise AssertionError("check_fx_model accepted a float64 model")


def test_layer_names_are_module_paths_and_classes() -> None:
    assert {"stem.0", "conv.1", "head", "Conv2d", "Tiny"} <= NAMES
    assert names_layer("layer 'stem.0' is float64", NAMES)
    assert not names_layer("layer 'stems' is float64", NAMES)  # whole names only
    assert not names_layer("something went wrong", NAMES)


def test_library_error_naming_layer_and_fix_is_clear() -> None:
    exc = _raised_by_library("torch.ao FX quantization: 'stem.0.weight' is float64; quantize model.float()")
    assert classify(exc, NAMES) == CLEAR


@pytest.mark.parametrize("message", [
    "torch.ao FX quantization: the model is float64; quantize model.float()",  # no layer
    "'stem.0.weight' is float64",  # no fix
])
def test_library_error_without_layer_or_fix_is_a_failure(message: str) -> None:
    assert classify(_raised_by_library(message), NAMES) == FAILURE


def test_host_framework_error_is_a_failure_even_with_a_good_message() -> None:
    try:
        torch.zeros(2) @ torch.zeros(3)  # raised inside torch, not our code
    except RuntimeError as exc:
        exc.args = ("'head' cannot be traced; use quantize_pt2e",)
        assert classify(exc, NAMES) == FAILURE


def test_missing_dependency_timeout_and_cell_failure() -> None:
    try:
        require("no_such_module_for_the_coverage_test", "a test")
    except MissingDependency as exc:
        assert classify(exc, NAMES) == CLEAR
    assert classify(CellTimeout("late"), NAMES) == TIMEOUT
    assert classify(CellFailure("ORT mismatch on 'head'; use x"), NAMES) == FAILURE


def test_compare_is_max_normalised_and_counts_argmax() -> None:
    y = torch.tensor([[0.0, 2.0, 1.0], [4.0, 0.0, 1.0]])
    q = torch.tensor([[0.0, 1.0, 1.5], [4.0, 0.4, 1.0]])
    res = compare(q, y)
    assert math.isclose(res["max_norm"], 1.0 / 4.0) and res["agree"] == 50.0
    with pytest.raises(CellFailure, match="shape"):
        compare(q[:1], y)
    with pytest.raises(CellFailure, match="non-finite"):
        compare(torch.full_like(y, float("nan")), y)


def test_check_ort_flags_codes_beyond_ties() -> None:
    good = {"teacher_forced": {"sites_not_in_reference": [], "unexplained": 0, "max_code_diff": 1, "codes": 9}}
    check_ort(good)
    with pytest.raises(CellFailure, match="ORT mismatch"):
        check_ort({"teacher_forced": dict(good["teacher_forced"], unexplained=2)})


def test_run_cell_isolates_copies_and_times_out() -> None:
    model = Tiny().eval()
    inputs = make_inputs(8, batches=1, batch_size=2, test=4)
    with torch.no_grad():
        y = model(inputs.test)
    before = [p.clone() for p in model.parameters()]

    def mutate(m: nn.Module, x: Inputs) -> torch.Tensor:
        with torch.no_grad():
            for p in m.parameters():
                p.zero_()
        return m(x.test)

    res = run_cell(mutate, model, inputs, y)
    assert res["status"] == OK, res["message"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    def slow(m: nn.Module, x: Inputs) -> torch.Tensor:
        end = time.perf_counter() + 5
        while time.perf_counter() < end:
            pass
        return m(x.test)

    res = run_cell(slow, model, inputs, y, timeout=0.2)
    assert res["status"] == TIMEOUT and res["seconds"] < 2

    def boom(m: nn.Module, x: Inputs) -> torch.Tensor:
        raise KeyError("x")

    assert run_cell(boom, model, inputs, y)["status"] == FAILURE


def test_one_word_layer_names_count_only_in_quotes() -> None:
    assert names_layer("the weight of 'head' is NaN", NAMES)
    assert names_layer("layer `head.weight` is NaN", NAMES)
    assert not names_layer("the head is NaN", NAMES)
