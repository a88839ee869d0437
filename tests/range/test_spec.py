"""RangeSpec: validation in one place, the keyword form as a thin layer, the legacy spellings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from requant_plugin import estimate_range
from requant_plugin.options import Convention, LossSpace, PerChannel, PerTensor, Search, Space
from requant_plugin.range import RangeSpec, range_spec


def _same(a: object, b: object) -> None:
    for f in dataclasses.fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), f.name
        else:
            assert x == y and type(x) is type(y), f.name


def test_defaults_are_the_documented_ones() -> None:
    spec = RangeSpec()
    assert (spec.bits, spec.symmetric, spec.granularity, spec.space, spec.search) == (
        8, False, PerTensor(), Space.UNIFORM, Search.GOLDEN)
    assert (spec.p, spec.loss_space, spec.convention, spec.grid_points) == (
        0.5, LossSpace.ORIGINAL, Convention.TORCH, 2000)
    assert spec.quant_min is None and spec.quant_max is None
    assert not spec.per_channel and spec.ch_axis == 0 and spec.exponent == 1.0


def test_strings_become_members() -> None:
    spec = RangeSpec(space="sqrt", search="grid", loss_space="transformed", convention="narrow")  # type: ignore[arg-type]
    assert spec.space is Space.SQRT and spec.search is Search.GRID
    assert spec.loss_space is LossSpace.TRANSFORMED and spec.convention is Convention.NARROW
    assert spec == RangeSpec(space=Space.SQRT, search=Search.GRID, loss_space=LossSpace.TRANSFORMED,
                             convention=Convention.NARROW)
    assert spec.exponent == 0.5


@pytest.mark.parametrize(("options", "match"), [
    ({"space": "log"}, "'uniform', 'sqrt'"),
    ({"search": "bisect"}, "'golden', 'grid', 'minmax'"),
    ({"loss_space": "both"}, "'original', 'transformed'"),
    ({"convention": "onnx"}, "symmetric convention"),
    ({"bits": 9}, "2, 3, 4, 5, 6, 7, 8"),
    ({"bits": True}, "integer"),
    ({"quant_min": -8}, "both quant_min and quant_max"),
    ({"quant_min": 0, "quant_max": 300}, "256 levels"),
    ({"granularity": "per_channel"}, "PerTensor"),
    ({"space": "sqrt", "p": 1.5}, r"p must be in \(0, 1\]"),
    ({"search": "grid", "grid_points": 0}, "grid_points"),
])
def test_invalid_fields_name_the_fix(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RangeSpec(**options)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):  # the keyword form validates the same way
        estimate_range(torch.randn(6), **options)  # type: ignore[arg-type]


def test_bits_ignored_with_an_explicit_code_range() -> None:
    spec = RangeSpec(bits=99, quant_min=-8, quant_max=7, symmetric=True)
    assert (spec.grid().quant_min, spec.grid().quant_max) == (-8, 7)


def test_legacy_per_channel_and_ch_axis_become_granularity() -> None:
    assert range_spec(per_channel=True).granularity == PerChannel(0)
    assert range_spec(per_channel=True, ch_axis=1).granularity == PerChannel(1)
    assert range_spec(per_channel=False, ch_axis=1).granularity == PerTensor()
    assert range_spec(ch_axis=1).granularity == PerTensor()  # ch_axis alone never meant per channel
    assert range_spec(per_channel=True, ch_axis=np.int64(1)).granularity == PerChannel(1)
    with pytest.raises(ValueError, match="not both"):
        range_spec(granularity=PerChannel(0), per_channel=True)


def test_positional_bits_and_options_win_over_the_spec() -> None:
    base = RangeSpec(bits=4, space=Space.SQRT)
    assert range_spec(3) == RangeSpec(bits=3)
    assert range_spec(base) is base
    assert range_spec(base, bits=6, granularity=PerChannel(1)) == dataclasses.replace(
        base, bits=6, granularity=PerChannel(1))
    with pytest.raises(TypeError, match="bits"):
        range_spec(4, bits=5)
    with pytest.raises(TypeError, match="unknown option"):
        range_spec(per_chanel=True)
    with pytest.raises(TypeError, match="unknown option"):
        estimate_range(torch.randn(4), 4, per_chanel=True)


def test_spec_and_keyword_forms_give_identical_estimates() -> None:
    w = torch.randn(6, 5, 3) * torch.linspace(0.1, 2.0, 5).view(1, -1, 1)
    spec = RangeSpec(bits=4, symmetric=True, granularity=PerChannel(1), space=Space.SQRT,
                     convention=Convention.TENSORRT)
    a = estimate_range(w, spec)
    b = estimate_range(w, 4, symmetric=True, per_channel=True, ch_axis=1, space="sqrt", convention="tensorrt")
    c = estimate_range(w, RangeSpec(), bits=4, symmetric=True, granularity=PerChannel(-2), space="sqrt",
                       convention="tensorrt")
    _same(a, b)
    _same(a, c)
    assert a.granularity == PerChannel(1) and a.per_channel and a.ch_axis == 1
    assert type(a.space) is str and type(a.convention) is str  # plain strings, as before
    assert estimate_range(w, 4).granularity == PerTensor()


def test_spec_is_frozen_and_hashable() -> None:
    spec = RangeSpec(granularity=PerChannel(0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.bits = 4  # type: ignore[misc]
    assert hash(spec) == hash(RangeSpec(granularity=PerChannel(0)))
