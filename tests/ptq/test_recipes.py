"""ptq.recipes: recipes are plain QuantizeConfig data; written options win; constraints are data."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from refs.nets import DATA, make_seq_net

from requant_plugin import quantize_weights
from requant_plugin.options import PerChannel, Rounding, Space
from requant_plugin.ptq import RECIPES, QuantizeConfig
from requant_plugin.ptq.presets import PRESETS
from requant_plugin.ptq.recipes import RECIPE_REQUIRES, make_config, recipe_fields


def test_recipes_are_configs_named_after_themselves() -> None:
    assert set(RECIPES) == {"paper", "paper+", "beyond", "beyond-tensorrt", "beyond-codebook", "data-free"}
    for name, cfg in RECIPES.items():
        assert isinstance(cfg, QuantizeConfig) and cfg.recipe == name
        for key, allowed in RECIPE_REQUIRES.get(name, {}).items():  # a recipe honours itself
            value = cfg.settings()[key] if key == "bias_correction" else getattr(cfg, key)
            assert value in allowed
        assert PRESETS[name] == recipe_fields(cfg)
    beyond = RECIPES["beyond"]
    assert beyond.space is Space.UNIFORM and beyond.granularity == PerChannel()
    assert beyond.rounding is Rounding.FEEDBACK


def test_replace_a_recipe_equals_the_keyword_form() -> None:
    net = make_seq_net()
    q1, r1 = quantize_weights(net, dataclasses.replace(RECIPES["beyond"], bits=3), DATA)
    q2, r2 = quantize_weights(net, 3, recipe="beyond", calibration_data=DATA)
    q3, r3 = quantize_weights(net, "beyond", DATA, bits=3)
    for a, b, c in zip(q1.parameters(), q2.parameters(), q3.parameters(), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert r1.settings == r2.settings == r3.settings and r1.settings["recipe"] == "beyond"


def test_a_replaced_field_the_recipe_cannot_honour_raises() -> None:
    cfg = dataclasses.replace(RECIPES["beyond-tensorrt"], symmetric=False)
    with pytest.raises(ValueError, match="recipe='beyond-tensorrt' cannot honour symmetric=False"):
        quantize_weights(make_seq_net(), cfg, DATA)
    # dropping the name makes it a plain config
    quantize_weights(make_seq_net(), dataclasses.replace(cfg, recipe=None), DATA)


def test_make_config_refuses_two_recipes() -> None:
    with pytest.raises(ValueError, match="give one of them"):
        make_config("beyond", recipe="paper")
    with pytest.raises(ValueError, match="give one of them"):
        make_config(RECIPES["paper"], recipe="paper")
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        make_config("nope")
    assert make_config() == QuantizeConfig()
    assert make_config(3) == QuantizeConfig(bits=3)
