"""The torch.ao FX side on the models users bring (issue 15 items 1, 2, 8).

* weight variants (plain / channels_last / inference tensors / frozen): the same qparams as the
  plain model, through the flow helper ``quantize_fx``, raw ``prepare_fx`` and the pinned weight
  grids, and the user's model untouched;
* onednn on CPUs without VNNI, simulated by patching ``torch.cpu._is_vnni_supported`` (the
  function torch's ``get_default_qconfig`` asks): no warning, the same mapping as with VNNI;
* options validated when the config is built; fp16/bf16 and NaN weights refused up front.

References: the plain model's converted modules, torch's ``PerChannelMinMaxObserver``.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from refs.nets import CALIB, make_net
from refs.options import INVALID_OPTIONS
from refs.variants import assert_untouched, make_variant, snapshot
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.observer import PerChannelMinMaxObserver
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from requant_plugin import quantize_weights
from requant_plugin.observers import PerChannelREQuantObserver, PinnedWeightObserver, pinned_grids
from requant_plugin.observers.flows import quantize_fx
from requant_plugin.qconfig import get_requant_qconfig, get_requant_qconfig_mapping


def _qparams(q: nn.Module) -> dict[str, Any]:
    """Scale/zero point of every quantized module and of the graph's quantize nodes."""
    out: dict[str, Any] = {}
    for name, m in q.named_modules():
        if hasattr(m, "scale") and hasattr(m, "zero_point") and hasattr(m, "weight") and callable(m.weight):
            w = m.weight()
            out[name] = (float(m.scale), int(m.zero_point), w.q_per_channel_scales().tolist(),
                         w.q_per_channel_zero_points().tolist(), w.int_repr().tolist())
    for name, b in q.named_buffers():
        if "scale" in name or "zero_point" in name:
            out[name] = b.tolist()
    return out


def assert_same_qparams(got: dict[str, Any], ref: dict[str, Any]) -> None:
    """The same integer codes and zero points; float scales to 1e-6 relative: a channels_last or
    inference-tensor convolution may sum in another order on some CPUs, moving an activation range
    by an ulp (the weights, hence their scales and codes, are the same values in any layout)."""
    assert got.keys() == ref.keys()
    for key, value in ref.items():
        if isinstance(value, tuple):  # (act scale, act zero point, weight scales, weight zero points, codes)
            assert got[key][0] == pytest.approx(value[0], rel=1e-6, abs=0), key
            assert got[key][1:] == value[1:], key
        else:  # a graph buffer: scale(s) or zero point(s)
            assert got[key] == pytest.approx(value, rel=1e-6, abs=0), key


@pytest.fixture(scope="module")
def plain_fx() -> dict[str, Any]:
    net = make_net()
    q, _ = quantize_fx(net, get_requant_qconfig_mapping(), CALIB)
    return _qparams(q)


def test_fx_helper_and_raw_prepare_fx_accept_every_weight_variant(weight_variant: str, plain_fx) -> None:
    """Same scales/zero points/int8 codes as the plain model; the user's model untouched."""
    model = make_variant(make_net(), weight_variant)
    before = snapshot(model)
    q, _ = quantize_fx(model, get_requant_qconfig_mapping(), CALIB)
    assert_same_qparams(_qparams(q), plain_fx)
    # raw torch flow on a deep copy (prepare_fx cannot fuse inference-tensor parameters in place)
    prepared = prepare_fx(copy.deepcopy(model), get_requant_qconfig_mapping(), (CALIB[0],))
    with torch.no_grad():
        for x in CALIB:
            prepared(x)
    assert_same_qparams(_qparams(convert_fx(prepared)), plain_fx)
    assert_untouched(model, before)
    assert not model.training


def test_weight_observer_matches_torch_minmax_on_every_variant(weight_variant: str) -> None:
    """The per-channel observer called directly on a variant's (BN-free) weight tensor."""
    model = make_variant(make_net(), weight_variant)
    w = model.conv2.weight
    before = snapshot(model)
    ours = PerChannelREQuantObserver(search="minmax")
    ours(w)
    ref = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    ref(make_net().conv2.weight.detach())
    for a, b in zip(ours.calculate_qparams(), ref.calculate_qparams(), strict=True):
        assert torch.equal(a, b)
    searched = PerChannelREQuantObserver()
    searched(w)
    plain = PerChannelREQuantObserver()
    plain(make_net().conv2.weight.detach())
    for a, b in zip(searched.calculate_qparams(), plain.calculate_qparams(), strict=True):
        assert torch.equal(a, b)
    assert_untouched(model, before)


def test_pinned_weights_accept_every_variant(weight_variant: str) -> None:
    qmodel, rep = quantize_weights(make_net(), 4, recipe="beyond", fold_bn=True, calibration_data=CALIB)

    def run(model: nn.Module) -> dict[str, Any]:
        prepared = prepare_fx(copy.deepcopy(model), get_requant_qconfig_mapping(weight_bits=4, weight_ranges=rep),
                              (CALIB[0],))
        with torch.no_grad():
            for x in CALIB:
                prepared(x)
        return _qparams(convert_fx(prepared))

    ref = run(qmodel)
    variant = make_variant(qmodel, weight_variant)
    before = snapshot(variant)
    assert_same_qparams(run(variant), ref)
    obs = PinnedWeightObserver(grids=pinned_grids(rep), quant_min=-8, quant_max=7)
    obs(variant.conv2.weight)
    assert obs.layer == "conv2"
    assert_untouched(variant, before)


# --------------------------------------------------------------------------- item 2: CPUs without VNNI


@pytest.fixture
def no_vnni(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a CPU without AVX-512 VNNI (e.g. AMD EPYC Zen 2/3) on any machine."""
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False)


def test_simulation_reproduces_torchs_warning(no_vnni: None) -> None:
    """The patch reaches torch's check: torch's own onednn default warns under it."""
    with pytest.warns(UserWarning, match="Vector Neural Network Instruction"):
        get_default_qconfig_mapping("onednn")


def _mapping_summary(mapping: Any) -> list[tuple[str, str]]:
    rows = []
    for key, qc in mapping.object_type_qconfigs.items():
        a = None if qc is None else qc.activation()
        rows.append((str(key), "" if a is None else
                     f"{type(a).__name__} {a.dtype} {getattr(a, 'quant_min', '')} {getattr(a, 'quant_max', '')}"))
    return rows


def test_onednn_mapping_does_not_depend_on_vnni(no_vnni: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        without = get_requant_qconfig_mapping(backend="onednn")
    a = without.global_qconfig.activation()
    assert (a.dtype, a.quant_min, a.quant_max) == (torch.quint8, 0, 255)  # the same on every CPU
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cpu, "_is_vnni_supported", lambda: True)
        with_vnni = get_requant_qconfig_mapping(backend="onednn")
    assert _mapping_summary(without) == _mapping_summary(with_vnni)
    reduced = get_requant_qconfig_mapping(backend="onednn", reduce_range=True).global_qconfig.activation()
    assert (reduced.quant_min, reduced.quant_max) == (0, 127)


def test_onednn_flow_and_errors_without_vnni(no_vnni: None) -> None:
    """What failed on AMD EPYC: the onednn flow end to end, and the pinned-grid error."""
    net = make_net()
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "onednn"
    try:
        prepared = prepare_fx(copy.deepcopy(net), get_requant_qconfig_mapping(backend="onednn"), (CALIB[0],))
        with torch.no_grad():
            for x in CALIB:
                prepared(x)
        q = convert_fx(prepared)
        assert isinstance(q.conv1, torch.ao.nn.quantized.Conv2d)
        with torch.no_grad():
            ref, out = net(CALIB[0]), q(CALIB[0])
        assert float(((out - ref) ** 2).mean() / (ref**2).mean()) < 0.05
    finally:
        torch.backends.quantized.engine = old
    _, rep = quantize_weights(net, 4, recipe="beyond", fold_bn=True, calibration_data=CALIB)
    with pytest.raises(ValueError, match="symmetric weights only"):
        get_requant_qconfig_mapping(weight_bits=4, backend="onednn", weight_ranges=rep)


# --------------------------------------------------------------------------- item 8


@pytest.mark.parametrize(("option", "match"), INVALID_OPTIONS)
@pytest.mark.parametrize("factory", ["qconfig", "mapping", "mapping_per_tensor"])
def test_every_option_is_validated_at_construction(factory: str, option: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        if factory == "qconfig":
            get_requant_qconfig(**option)
        elif factory == "mapping":
            get_requant_qconfig_mapping(**option)
        else:
            get_requant_qconfig_mapping(per_channel=False, backend="qnnpack", **option)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fx_helper_refuses_half_models_up_front(dtype: torch.dtype) -> None:
    model = make_net().to(dtype)
    before = snapshot(model)
    with pytest.raises(TypeError, match=rf"conv1.weight.*{str(dtype).split('.')[-1]}.*model\.float\(\)"):
        quantize_fx(model, get_requant_qconfig_mapping(), [x.to(dtype) for x in CALIB])
    assert_untouched(model, before)
    q, _ = quantize_fx(model.float(), get_requant_qconfig_mapping(), CALIB)  # the named fix works
    assert isinstance(q.conv1, torch.ao.nn.quantized.Conv2d)


def test_nan_weight_is_reported_as_a_weight_with_the_fix() -> None:
    model = make_net()
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"weights of 'conv2.weight' have NaN/Inf.*fix"):
        quantize_fx(model, get_requant_qconfig_mapping(), CALIB)
    # raw prepare_fx: the activation observer after the layer sees the NaN first; it names weights
    prepared = prepare_fx(copy.deepcopy(model), get_requant_qconfig_mapping(), (CALIB[0],))
    with pytest.raises(ValueError, match=r"NaN/Inf weights.*named_parameters"), torch.no_grad():
        prepared(CALIB[0])
