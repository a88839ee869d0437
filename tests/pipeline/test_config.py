"""pipeline.config: a PipelineConfig builds the QuantizeConfig of each REQuant row."""

from __future__ import annotations

import pytest

from requant_plugin.options import PerChannel, PerTensor, Space
from requant_plugin.pipeline import PipelineConfig, UsageError, run_pipeline
from requant_plugin.ptq import QuantizeConfig


def test_quantize_config_of_a_row() -> None:
    cfg = PipelineConfig(bits=(8, 4), per_channel=True, symmetric=True)
    assert cfg.quantize_config(4, "uniform") == QuantizeConfig(
        bits=4, space=Space.UNIFORM, symmetric=True, granularity=PerChannel())
    assert PipelineConfig().quantize_config(8, "sqrt").granularity == PerTensor()


@pytest.mark.parametrize(("cfg", "fragment"), [
    (PipelineConfig(bits=(9,)), "bit width 9 is not supported: use 2..8"),
    (PipelineConfig(bits=(4,), act_bits=1), "bit width 1 is not supported"),
    (PipelineConfig(space="log"), "unknown --space 'log'"),
    (PipelineConfig(bits=()), "give at least one bit width"),
])
def test_bad_settings_are_usage_errors_before_any_work(cfg: PipelineConfig, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        run_pipeline(cfg, log=lambda _: None)
