"""ObserverSpec: one validated spec for the FX and pt2e factories; the keyword/positional forms are thin layers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from requant_plugin.observers import ObserverSpec, get_requant_qconfig, get_requant_qconfig_mapping
from requant_plugin.options import PerChannel, PerTensor, Search, Space


def _args(ctr: object) -> dict[str, object]:
    return dict(ctr.p.keywords)  # type: ignore[attr-defined]


def test_defaults_and_normalisation() -> None:
    spec = ObserverSpec(search="grid", weight_space="sqrt")  # type: ignore[arg-type]
    assert spec.search is Search.GRID and spec.weight_space is Space.SQRT
    assert spec.granularity == PerChannel(0) and spec.per_channel and spec.ch_axis == 0
    assert spec.replace(per_channel=False).granularity == PerTensor()
    assert spec.replace(ch_axis=1).granularity == PerChannel(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.bins = 4  # type: ignore[misc]


@pytest.mark.parametrize(("option", "match"), [
    ({"weight_bits": 9}, "bits"), ({"search": "mse"}, "unknown search 'mse'"),
    ({"weight_search": "mse"}, "unknown weight_search"), ({"act_search": "kl"}, "unknown act_search"),
    ({"weight_space": "log"}, "unknown space 'log'"), ({"p": 0.0}, "exponent p"),
    ({"weight_input_mean_ratio": float("nan")}, "input_mean_ratio"), ({"bins": 1}, "bins must be at least"),
    ({"act_sample_size": 10}, "sample_size must be at least"), ({"eps": 0.0}, r"eps \(the smallest scale\)"),
    ({"backend": "cuda"}, "unknown backend 'cuda'"), ({"granularity": 0}, "granularity"),
])
def test_every_field_is_validated_once(option: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ObserverSpec(**option)  # type: ignore[arg-type]


def test_legacy_positional_keyword_and_spec_forms_agree() -> None:
    spec = ObserverSpec(weight_bits=4, act_bits=8, backend="x86", granularity=PerTensor())
    forms = [get_requant_qconfig(4, 8, "x86", False), get_requant_qconfig(spec),
             get_requant_qconfig(weight_bits=4, act_bits=8, backend="x86", per_channel=False),
             get_requant_qconfig(ObserverSpec(), weight_bits=4, per_channel=False)]
    ref = forms[0]
    for qc in forms[1:]:
        assert _args(qc.activation) == _args(ref.activation)
        assert _args(qc.weight) == _args(ref.weight)
    assert _args(ref.weight)["quant_min"] == -8 and _args(ref.weight)["qscheme"] == torch.per_tensor_symmetric


def test_options_override_the_spec_and_bad_calls_raise() -> None:
    spec = ObserverSpec(weight_bits=4)
    qc = get_requant_qconfig(spec, weight_bits=6)
    assert _args(qc.weight)["quant_min"] == -32
    assert spec.weight_bits == 4  # the spec itself is unchanged
    with pytest.raises(TypeError, match="unexpected keyword argument 'weight_bitz'"):
        get_requant_qconfig(weight_bitz=4)
    with pytest.raises(TypeError, match="multiple values for argument 'weight_bits'"):
        get_requant_qconfig(4, weight_bits=4)
    with pytest.raises(TypeError, match="at most 4 positional"):
        get_requant_qconfig(4, 8, "x86", True, 1)
    with pytest.raises(ValueError, match="is_qat"):
        get_requant_qconfig(is_qat=True)


def test_the_same_spec_serves_both_flows() -> None:
    pytest.importorskip("torchao")
    from requant_plugin.pt2e import get_requant_quantization_config

    spec = ObserverSpec(weight_bits=4, search="grid", weight_input_mean_ratio=0.0)  # type: ignore[arg-type]
    fx = get_requant_qconfig_mapping(spec).global_qconfig
    assert fx is not None
    pt = get_requant_quantization_config(spec)
    fx_w, pt_w = _args(fx.weight), _args(pt.weight.observer_or_fake_quant_ctr)
    for key in ("search", "space", "p", "input_mean_ratio"):
        assert fx_w[key] == pt_w[key], key
    assert pt.weight.quant_min == fx_w["quant_min"] == -8
    assert get_requant_quantization_config(4, 8).weight.quant_min == -8  # legacy positional form
