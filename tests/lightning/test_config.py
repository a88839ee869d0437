"""The callback's settings (:mod:`requant_plugin.lightning.config`): a frozen, validated
``CalibrationConfig``; ``REQuantCalibration(attr, config, **options)`` with options that always
win; every setting a read/write attribute; the checkpoint's settings record as before."""

from __future__ import annotations

import dataclasses

import pytest
from torch.ao.quantization import get_default_qconfig_mapping

from requant_plugin.lightning import CalibrationConfig, REQuantCalibration
from requant_plugin.options import PerChannel, PerTensor


def test_bad_arguments_raise_at_construction():
    with pytest.raises(ValueError, match="mode must be one of"):
        REQuantCalibration(mode="qat")
    with pytest.raises(ValueError, match="weight_bits"):
        REQuantCalibration(weight_bits=1)
    with pytest.raises(ValueError, match="use quantizer= for mode='pt2e'"):
        REQuantCalibration(mode="pt2e", qconfig_mapping=get_default_qconfig_mapping("x86"))
    with pytest.raises(ValueError, match="dataloader must be"):
        REQuantCalibration(dataloader="test")


def test_export_onnx_requires_data_mode():
    with pytest.raises(ValueError, match="export_onnx needs calibration data"):
        REQuantCalibration(mode="weights", export_onnx="x.onnx")


def test_config_and_options():
    cfg = CalibrationConfig(mode="weights", weight_bits=4, verbose=False)
    assert REQuantCalibration("model", cfg).config == cfg
    cb = REQuantCalibration("model", config=cfg, weight_bits=6, space="uniform")  # written options win
    assert (cb.mode, cb.weight_bits, cb.space, cb.verbose) == ("weights", 6, "uniform", False)
    assert cfg.weight_bits == 4 and cfg.space is None  # the given config is not changed
    assert REQuantCalibration("model", mode="fx", weight_bits=4).config == CalibrationConfig(weight_bits=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mode = "fx"  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['weight_bit'\]"):
        REQuantCalibration(weight_bit=4)
    with pytest.raises(TypeError, match="config must be a CalibrationConfig"):
        REQuantCalibration("model", {"mode": "fx"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attr must name a submodule"):
        REQuantCalibration("")


def test_attribute_writes_replace_the_config_validated():
    cb = REQuantCalibration("model", mode="fx")
    first = cb.config
    cb.verbose = False
    assert cb.config is not first and cb.config.verbose is False and first.verbose is True
    with pytest.raises(ValueError, match="act_bits"):
        cb.act_bits = 9
    assert cb.act_bits == 8
    with pytest.raises(ValueError, match="num_batches"):
        CalibrationConfig(num_batches=0)
    with pytest.raises(ValueError, match=r"unknown space 'log'.*\['uniform', 'sqrt'\]"):
        CalibrationConfig(space="log")


def test_granularity_is_another_spelling_of_per_channel():
    assert REQuantCalibration(mode="weights", granularity=PerTensor()).per_channel is False
    assert REQuantCalibration(mode="weights", granularity=PerChannel(0)).per_channel is True
    assert CalibrationConfig(per_channel=True).granularity == PerChannel(0)
    assert CalibrationConfig().granularity is None
    with pytest.raises(ValueError, match="PerChannel"):
        REQuantCalibration(mode="weights", granularity=PerChannel(1))


_X86 = get_default_qconfig_mapping("x86")


@pytest.mark.parametrize(("attr", "options", "record"), [
    ("model", {}, {"mode": "fx", "attr": "model", "weight_bits": 8, "observers": "requant", "act_bits": 8}),
    ("model", {"mode": "weights", "weight_bits": 4},
     {"mode": "weights", "attr": "model", "weight_bits": 4, "observers": "default", "space": "sqrt",
      "per_channel": True, "quantize_kwargs": {}}),
    ("model", {"mode": "weights", "space": "uniform",
               "quantize_kwargs": {"recipe": "data-free", "input_shape": (3, 8, 8), "fold_bn": True}},
     {"mode": "weights", "attr": "model", "weight_bits": 8, "observers": "default", "space": "uniform",
      "per_channel": None, "quantize_kwargs": {"fold_bn": True, "recipe": "data-free"}}),
    ("model", {"mode": "pt2e", "act_bits": 6},
     {"mode": "pt2e", "attr": "model", "weight_bits": 8, "observers": "requant", "act_bits": 6}),
    ("model", {"qconfig_mapping": _X86},
     {"mode": "fx", "attr": "model", "weight_bits": 8, "observers": "custom", "act_bits": 8}),
    (None, {}, {"mode": "fx", "attr": None, "weight_bits": 8, "observers": "requant", "act_bits": 8}),
])
def test_uncalibrated_state_is_what_earlier_versions_wrote(attr, options, record):
    """The settings record decides whether a checkpoint's calibration is reused: its keys and plain
    values are those written before the config existed (literals from the previous release)."""
    state = REQuantCalibration(attr, **options).state_dict()
    assert state == {"version": 1, "calibrated": False, "config": record}
    assert all(type(v) in (str, int, bool, dict, type(None)) for v in state["config"].values())
