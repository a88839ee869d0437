"""Issue 15 item 3: a keyword the caller wrote beats the recipe, even at its default value; a
keyword the recipe cannot honour raises naming both."""

from __future__ import annotations

import pytest
from refs.nets import DATA, make_seq_net

from requant_plugin import estimate_range, quantize_weights
from requant_plugin.ptq.presets import DEFAULTS, PRESETS, apply_recipe, quantize_beyond


def test_explicit_default_valued_space_beats_the_recipe() -> None:
    net = make_seq_net()
    _, rep = quantize_weights(net, 4, recipe="beyond", space="sqrt", calibration_data=DATA)
    assert rep.settings["space"] == "sqrt"
    assert rep["2"].space == "sqrt" and rep["2"].p == 0.5  # the middle layer uses the transform
    # everything the caller did not write still comes from the recipe
    assert rep.settings["per_channel"] is True and rep.settings["rounding"] == "feedback"
    assert rep.settings["objective"] == "output" and rep.settings["bias_correction"] == "sequential"


def test_explicit_default_valued_per_channel_and_objective_beat_the_recipe() -> None:
    net = make_seq_net()
    _, rep = quantize_weights(net, 4, recipe="beyond", per_channel=False, objective="weight",
                              bias_correction=False, rounding="nearest", inputs="float", calibration_data=DATA)
    assert rep.settings["per_channel"] is False and rep.settings["objective"] == "weight"
    assert rep.settings["bias_correction"] is None and rep.settings["rounding"] == "nearest"
    w = net[2].weight.detach()
    ref = estimate_range(w, 4, per_channel=False, space="uniform")  # per tensor, weight MSE
    assert rep["2"].estimate is not None and not rep["2"].estimate.per_channel
    assert rep["2"].alpha == pytest.approx(float(ref.alpha), rel=0, abs=0)


def test_quantize_beyond_passes_written_keywords_through() -> None:
    net = make_seq_net()
    _, rep = quantize_beyond(net, 4, DATA, space="sqrt", per_channel=False)
    assert rep.settings["recipe"] == "beyond"
    assert rep.settings["space"] == "sqrt" and rep.settings["per_channel"] is False
    _, rep = quantize_beyond(net, 4, DATA, recipe="beyond-tensorrt")
    assert rep.settings["symmetric"] is True and rep.settings["recipe"] == "beyond-tensorrt"


def test_no_recipe_gives_the_documented_defaults() -> None:
    assert apply_recipe(None, {}) == DEFAULTS
    for name, preset in PRESETS.items():  # nothing written: exactly the preset over the defaults
        assert apply_recipe(name, {}) == {**DEFAULTS, **preset}


@pytest.mark.parametrize(("recipe", "key", "value"), [
    ("beyond-tensorrt", "symmetric", False),
    ("beyond-tensorrt", "convention", "torch"),
    ("beyond-codebook", "space", "uniform"),
    ("data-free", "objective", "output"),
    ("data-free", "rounding", "feedback"),
    ("data-free", "bias_correction", True),
])
def test_a_keyword_the_recipe_cannot_honour_raises_naming_both(recipe: str, key: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"recipe='{recipe}' cannot honour {key}={value!r}"):
        quantize_weights(make_seq_net(), 4, recipe=recipe, calibration_data=DATA, input_shape=(3, 8, 8),
                         **{key: value})  # type: ignore[arg-type]


def test_compatible_written_keywords_are_accepted() -> None:
    _, rep = quantize_weights(make_seq_net(), 4, recipe="beyond-tensorrt", symmetric=True, convention="tensorrt",
                              calibration_data=DATA)
    assert rep.settings["symmetric"] is True
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        quantize_weights(make_seq_net(), 4, recipe="nope")
