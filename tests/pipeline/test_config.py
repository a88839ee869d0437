"""pipeline.config: a PipelineConfig builds the QuantizeConfig of each REQuant row."""

from __future__ import annotations

import pytest

from requant_plugin.options import Inputs, Objective, PerChannel, PerTensor, Rounding, Space
from requant_plugin.pipeline import PipelineConfig, UsageError, run_pipeline
from requant_plugin.ptq import RECIPES, QuantizeConfig


def test_quantize_config_of_a_row() -> None:
    cfg = PipelineConfig(bits=(8, 4), per_channel=True, symmetric=True)
    assert cfg.quantize_config(4, "uniform") == QuantizeConfig(
        bits=4, space=Space.UNIFORM, symmetric=True, granularity=PerChannel())
    assert PipelineConfig().quantize_config(8, "sqrt").granularity == PerTensor()


def test_recipe_row_is_the_recipe_plus_what_the_user_set() -> None:
    plain = PipelineConfig(bits=(4, 3), recipe="beyond")
    assert plain.methods[-1] == "recipe" and plain.label("recipe") == "REQuant beyond"
    assert plain.recipe_config(3) == RECIPES["beyond"].replace(bits=3)  # nothing the user did not write
    row = PipelineConfig(recipe="beyond", symmetric=True, act_bits=4).recipe_config(4)
    assert (row.symmetric, row.act_bits, row.objective, row.rounding, row.inputs) == (
        True, 4, Objective.OUTPUT, Rounding.FEEDBACK, Inputs.QUANTIZED)
    # act_bits only where the recipe simulates activations (its inputs are quantized)
    assert PipelineConfig(recipe="paper", act_bits=4).recipe_config(4).act_bits is None
    assert "recipe" not in PipelineConfig().methods
    assert PipelineConfig(recipe="paper", per_channel=True).recipe_config(4).granularity == PerChannel()


def test_mixed_row_is_the_recipe_with_the_chosen_widths() -> None:
    cfg = PipelineConfig(bits=(4,), recipe="beyond", mixed_precision=True)
    assert cfg.methods[-2:] == ["recipe", "recipe_mixed"] and cfg.label("recipe_mixed") == "REQuant beyond mixed"
    row = cfg.recipe_config(4, {"conv1": 8, "fc": 2})
    assert row == RECIPES["beyond"].replace(bits=4, overrides={"conv1": {"bits": 8}, "fc": {"bits": 2}})
    assert "recipe_mixed" not in PipelineConfig(mixed_precision=True).methods  # no recipe, no row (and an error)


@pytest.mark.parametrize(("cfg", "fragment"), [
    (PipelineConfig(bits=(9,)), "bit width 9 is not supported: use 2..8"),
    (PipelineConfig(bits=(4,), act_bits=1), "bit width 1 is not supported"),
    (PipelineConfig(space="log"), "unknown --space 'log'"),
    (PipelineConfig(bits=()), "give at least one bit width"),
    (PipelineConfig(recipe="nope"), "--recipe nope: unknown recipe 'nope'"),
    (PipelineConfig(mixed_precision=True), "add --recipe"),
    (PipelineConfig(recipe="beyond", mixed_precision=True, end_bits=8), "use one of them"),
])
def test_bad_settings_are_usage_errors_before_any_work(cfg: PipelineConfig, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        run_pipeline(cfg, log=lambda _: None)
