"""ptq.config: the frozen, validated QuantizeConfig and LayerOverride, and the first/last rule."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from refs.nets import make_seq_net

from requant_plugin import quantize_weights
from requant_plugin.options import BiasCorrection, PerChannel, PerTensor, Space
from requant_plugin.ptq import LayerOverride, QuantizeConfig, first_last, layer_space
from requant_plugin.ptq.config import AUTO_GRAM_COST, AUTO_ROWS, AUTO_ROWS_2BIT


def test_defaults_and_normalisation() -> None:
    cfg = QuantizeConfig(space="uniform", bias_correction=True)  # type: ignore[arg-type]
    assert cfg.space is Space.UNIFORM and cfg.space == "uniform"
    assert cfg.bias_correction is BiasCorrection.PLAIN
    assert QuantizeConfig().granularity == PerTensor() and not QuantizeConfig().per_channel
    assert QuantizeConfig(p=[0.5, 1]).p == (0.5, 1.0)  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.bits = 3  # type: ignore[misc]


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("bits", 9, "bits=9 is not supported"),
    ("space", "log", "unknown space 'log'"),
    ("search", "newton", "unknown search 'newton'"),
    ("objective", "loss", "unknown objective 'loss'"),
    ("rounding", "up", "unknown rounding 'up'"),
    ("convention", "x", "unknown convention 'x'"),
    ("bias_correction", "q", "unknown bias_correction 'q'"),
    ("granularity", PerChannel(1), "output-channel axis"),
    ("p", "half", "p must be a number"),
    ("calibration_rows", 0, "calibration_rows must be positive, None"),
    ("calibration_rows", "all", "calibration_rows must be positive, None .all. or 'auto', got 'all'"),
])
def test_invalid_fields_name_the_field(field: str, value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        QuantizeConfig(**{field: value})  # type: ignore[arg-type]


def test_auto_rows_budget_follows_the_gram_size_and_written_values_win() -> None:
    for bits in (3, 4, 8):  # rows x n^2 held at AUTO_GRAM_COST, within [AUTO_ROWS, AUTO_ROWS_2BIT]
        cfg = QuantizeConfig(bits=bits)
        assert cfg.rows_budget(9) == cfg.rows_budget(576**2) == AUTO_ROWS_2BIT
        assert cfg.rows_budget(768**2) == AUTO_GRAM_COST // 768**2 == 18432
        assert cfg.rows_budget(1152**2) == cfg.rows_budget(4608**2) == AUTO_ROWS
    assert QuantizeConfig(bits=2).rows_budget(4608**2) == AUTO_ROWS_2BIT > AUTO_ROWS
    assert QuantizeConfig(bits=2, calibration_rows=AUTO_ROWS).rows_budget(9) == AUTO_ROWS
    assert QuantizeConfig(bits=8, calibration_rows=None).rows_budget(9) is None
    assert QuantizeConfig().settings()["calibration_rows"] == "auto"


def test_replace_takes_the_legacy_per_channel() -> None:
    cfg = QuantizeConfig().replace(per_channel=True, bits=3)
    assert cfg.granularity == PerChannel() and cfg.per_channel and cfg.bits == 3
    with pytest.raises(ValueError, match="not both"):
        QuantizeConfig().replace(per_channel=True, granularity=PerTensor())
    with pytest.raises(TypeError, match="unknown quantize option"):
        QuantizeConfig().replace(bitz=3)


def test_overrides_are_converted_and_checked() -> None:
    cfg = QuantizeConfig(overrides={"0": {"bits": 8, "per_channel": True}, "6": LayerOverride(skip=True)})
    assert cfg.overrides["0"] == LayerOverride(bits=8, granularity=PerChannel())
    assert cfg.override("6").skip and cfg.override("3") == LayerOverride()
    with pytest.raises(ValueError, match=r"overrides\['0'\] has unknown keys \['bitz'\]"):
        QuantizeConfig(overrides={"0": {"bitz": 8}})
    with pytest.raises(ValueError, match="bits=12 is not supported"):
        LayerOverride(bits=12)
    assert QuantizeConfig(overrides=None).overrides == {}  # type: ignore[arg-type]


def test_settings_view_has_the_report_keys() -> None:
    s = QuantizeConfig(bias_correction="bn", granularity=PerChannel()).settings()  # type: ignore[arg-type]
    assert list(s) == ["bits", "space", "symmetric", "per_channel", "fold_bn", "search", "p", "loss_space",
                       "objective", "bias_correction", "rounding", "feedback_widen", "feedback_sweeps",
                       "feedback_refit", "inputs", "act_bits", "act_shortcuts", "residual_correction", "end_bits",
                       "target_damp", "calibration_rows", "seed", "recipe"]
    assert s["bias_correction"] == "bn" and s["per_channel"] is True and type(s["space"]) is str
    assert QuantizeConfig().settings()["bias_correction"] is None


def test_first_last_rule() -> None:
    ends = first_last(["a", "b", "c"])
    assert ends == {"a", "c"} and first_last([]) == frozenset()
    assert layer_space("a", "sqrt", ends) == "uniform"
    assert layer_space("b", "sqrt", ends) == "sqrt"
    assert layer_space("c", "sqrt", ends, transform_first_last=True) == "sqrt"
    assert layer_space("c", "sqrt", ends, space_overridden=True) == "sqrt"


def test_config_and_keyword_forms_agree() -> None:
    net = make_seq_net()
    cfg = QuantizeConfig(bits=3, granularity=PerChannel(), symmetric=True, overrides={"2": {"bits": 5}})
    q1, r1 = quantize_weights(net, cfg)
    q2, r2 = quantize_weights(net, 3, per_channel=True, symmetric=True, overrides={"2": {"bits": 5}})
    q3, _ = quantize_weights(net, bits=3, granularity=PerChannel(), symmetric=True,
                             overrides={"2": LayerOverride(bits=5)})
    for a, b, c in zip(q1.parameters(), q2.parameters(), q3.parameters(), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert r1.settings == r2.settings and r1["2"].bits == 5
    with pytest.raises(TypeError, match="bits given twice"):
        quantize_weights(net, 4, bits=3)


def test_end_bits_and_override_act_bits_are_checked() -> None:
    assert QuantizeConfig(end_bits=8).end_bits == 8
    with pytest.raises(ValueError, match="bits=9 is not supported"):
        QuantizeConfig(end_bits=9)
    with pytest.raises(ValueError, match=r"overrides give \['conv'\] their own act_bits.*set act_bits="):
        QuantizeConfig(overrides={"conv": {"act_bits": 8}})
    cfg = QuantizeConfig(inputs="quantized", act_bits=4, overrides={"conv": {"act_bits": 8}})  # type: ignore[arg-type]
    assert cfg.override("conv").act_bits == 8


def test_act_shortcuts_is_a_flag() -> None:
    assert QuantizeConfig().act_shortcuts is False
    with pytest.raises(ValueError, match="act_shortcuts must be True or False, got 'no'"):
        QuantizeConfig(act_shortcuts="no")  # type: ignore[arg-type]
