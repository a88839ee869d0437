"""Grid: the standard b-bit grids, the symmetric conventions, and validation."""

from __future__ import annotations

import numpy as np
import pytest

from requant_plugin.core import Grid
from requant_plugin.options import Convention


@pytest.mark.parametrize(("bits", "symmetric", "convention", "codes"), [
    (8, False, "torch", (0, 255)), (4, False, "torch", (0, 15)),
    (8, True, "torch", (-128, 127)), (8, True, "tensorrt", (-128, 127)), (8, True, "narrow", (-127, 127)),
    (3, True, "narrow", (-3, 3)),
])
def test_standard_grids(bits: int, symmetric: bool, convention: str, codes: tuple[int, int]) -> None:
    g = Grid.from_bits(bits, symmetric=symmetric, convention=convention)
    assert (g.quant_min, g.quant_max) == codes and g.symmetric == symmetric


def test_symmetric_divisor_per_convention() -> None:
    assert Grid.from_bits(8, symmetric=True).symmetric_divisor == 127.5
    assert Grid.from_bits(8, symmetric=True, convention="tensorrt").symmetric_divisor == 127.0
    assert Grid.from_bits(8, symmetric=True, convention="narrow").symmetric_divisor == 127.0
    s1, z = Grid.from_bits(8, symmetric=True, convention="tensorrt").base_qparams(np.array([-2.54]), np.array([1.0]))
    assert s1[0] == pytest.approx(2.54 / 127) and z[0] == 0


def test_convention_member_is_stored_as_its_spelling() -> None:
    g = Grid.from_bits(4, symmetric=True, convention=Convention.NARROW)
    assert g == Grid.from_bits(4, symmetric=True, convention="narrow")
    assert type(g.convention) is str and g.convention == "narrow"


@pytest.mark.parametrize(("args", "match"), [
    ((0, 0), "greater than"), ((1, 15), "must contain 0"), ((0, 300), "256 levels"),
    ((-8, 7, True, "onnx"), r"unknown symmetric convention 'onnx': valid values are \['torch', 'tensorrt', 'narrow'\]"),
])
def test_invalid_grids(args: tuple[object, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Grid(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("bits", [1, 9, 4.5, True])
def test_from_bits_rejects_bad_widths(bits: object) -> None:
    with pytest.raises(ValueError, match=r"2, 3, 4, 5, 6, 7, 8|integer"):
        Grid.from_bits(bits)  # type: ignore[arg-type]
