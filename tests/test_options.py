"""The one vocabulary: members are their strings, parse errors list the valid values, granularity types."""

from __future__ import annotations

import numpy as np
import pytest

from requant_plugin.options import (
    MAX_BITS,
    MIN_BITS,
    BiasCorrection,
    Convention,
    LossSpace,
    PerChannel,
    PerTensor,
    Search,
    Space,
    check_bits,
    granularity,
)


def test_values_and_string_equality() -> None:
    assert Space.values() == ["uniform", "sqrt"] and Space.SQRT == "sqrt" and str(Space.SQRT) == "sqrt"
    assert Search.values() == ["golden", "grid", "minmax"]
    assert LossSpace.values() == ["original", "transformed"] and LossSpace.option_name() == "loss_space"
    assert Convention.values() == ["torch", "tensorrt", "narrow"]
    assert (MIN_BITS, MAX_BITS) == (2, 8)


def test_parse_returns_members_and_lists_valid_values() -> None:
    assert Space.parse("sqrt") is Space.SQRT and Search.parse(Search.GRID) is Search.GRID
    with pytest.raises(ValueError, match=r"unknown space 'log': valid values are \['uniform', 'sqrt'\]"):
        Space.parse("log")
    with pytest.raises(ValueError, match=r"unknown search 'bisect': valid values are \['golden', 'grid', 'minmax'\]"):
        Search.parse("bisect")


def test_bias_correction_shorthands() -> None:
    assert BiasCorrection.parse(False) is BiasCorrection.parse(None) is BiasCorrection.NONE
    assert BiasCorrection.parse(True) is BiasCorrection.PLAIN and BiasCorrection.parse("bn") is BiasCorrection.BN
    for bad in ("x", 1, 0.5):
        with pytest.raises(ValueError, match=r"unknown bias_correction .*valid values are"):
            BiasCorrection.parse(bad)


def test_check_bits() -> None:
    assert check_bits(4) == 4 and check_bits(np.int64(3)) == 3
    for bad in (9, 1, True, 4.0, "4"):
        with pytest.raises(ValueError, match=r"2\.\.8|2, 3, 4, 5, 6, 7, 8"):
            check_bits(bad)


def test_granularity_types() -> None:
    assert granularity(False) == PerTensor() and granularity(True, 1) == PerChannel(1)
    with pytest.raises(ValueError, match="axis must be an int"):
        PerChannel(True)  # type: ignore[arg-type]
