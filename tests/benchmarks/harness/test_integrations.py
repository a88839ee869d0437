"""``benchmarks.harness.integrations``: the one bridge to code that lives only in an integration script."""

from __future__ import annotations

import sys

from benchmarks.harness.integrations import load_integration, pt2e_configurations


def test_integration_scripts_load_once_by_name() -> None:
    mod = load_integration("pt2e_quantize")
    assert mod is load_integration("pt2e_quantize") is sys.modules["pt2e_quantize"]
    assert pt2e_configurations() is mod.configurations


def test_pt2e_configurations_list_the_comparison_rows() -> None:
    rows = pt2e_configurations()(4, 8, "x86_inductor", variants=True)
    keys = [key for key, _label, _quantizer in rows]
    assert keys[:2] == ["default", "requant"] and len(set(keys)) == len(keys)
