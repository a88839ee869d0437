"""torchao pt2e: REQuant observers through ``prepare_pt2e`` / ``convert_pt2e``.

References: the q/dq structure torchao's own default config produces on the same graph,
torchao's ``MinMaxObserver``/``PerChannelMinMaxObserver`` (REQuant with ``search="minmax"``
must give the same quantization parameters), and the quantize node arguments themselves.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")

from torchao.quantization.pt2e import PartialWrapper, allow_exported_model_train_eval
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec

from requant_plugin import observers as ao_observers
from requant_plugin.pt2e import (
    PerChannelREQuantObserver,
    REQuantObserver,
    get_requant_quantization_config,
    get_requant_quantizer,
    get_torchao_default_quantization_config,
    make_quantizer,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.conv2(y) + y)
        return self.fc(torch.flatten(self.pool(y), 1))


BATCHES = [torch.randn(4, 3, 10, 10, generator=torch.Generator().manual_seed(i)) for i in range(5)]


@pytest.fixture(scope="module")
def exported() -> tuple[nn.Module, torch.export.ExportedProgram]:
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.5, 2.0)
    ep = torch.export.export(net, (BATCHES[0],), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    return net, ep


def _prepare(ep: torch.export.ExportedProgram, quantizer, batches=BATCHES) -> torch.fx.GraphModule:
    prepared = prepare_pt2e(ep.module(), quantizer)  # module() builds a fresh copy
    with torch.no_grad():
        for x in batches:
            prepared(x)
    return prepared


def _qdq(model: torch.fx.GraphModule) -> Counter:
    return Counter(str(n.target).split(".")[-2] for n in model.graph.nodes
                   if "quantized_decomposed" in str(n.target))


def _nodes(model: torch.fx.GraphModule, op: str) -> list[torch.fx.Node]:
    return [n for n in model.graph.nodes if f"quantized_decomposed.{op}." in str(n.target)]


@pytest.fixture(scope="module")
def requant_w4a4(exported):
    _, ep = exported
    prepared = _prepare(ep, get_requant_quantizer(weight_bits=4, act_bits=4))
    observers = {n: m for n, m in prepared.named_modules()
                 if isinstance(m, (REQuantObserver, PerChannelREQuantObserver))}
    state = {k: v.clone() for k, v in prepared.state_dict().items() if "activation_post_process" in k}
    return state, observers, convert_pt2e(prepared)


def test_qdq_counts_match_torchao_default_structure(exported, requant_w4a4) -> None:
    _, ep = exported
    default = convert_pt2e(_prepare(ep, make_quantizer(get_torchao_default_quantization_config(4, 4))))
    ours = requant_w4a4[2]
    counts = _qdq(ours)
    assert counts == _qdq(default)
    assert counts["quantize_per_tensor"] >= 3 and counts["dequantize_per_tensor"] >= 3, counts
    assert counts["dequantize_per_channel"] == 3  # conv1, conv2, fc weights (folded to int8 constants)


def test_torch_ao_observers_in_pt2e_silently_do_nothing(exported) -> None:
    """Trap 1 of integration.md §5: torch.ao observer classes are left in the graph by
    convert_pt2e (no q/dq at all); requant_plugin.pt2e's classes are the ones to use."""
    _, ep = exported
    spec = QuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=255, qscheme=torch.per_tensor_affine,
                            observer_or_fake_quant_ctr=ao_observers.REQuantObserver)
    wspec = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127, ch_axis=0,
                             qscheme=torch.per_channel_symmetric,
                             observer_or_fake_quant_ctr=ao_observers.PerChannelREQuantObserver)
    wrong = convert_pt2e(_prepare(ep, make_quantizer(QuantizationConfig(spec, spec, wspec, None, False))))
    assert sum(_qdq(wrong).values()) == 0
    assert issubclass(REQuantObserver, torch.nn.Module) and REQuantObserver is not ao_observers.REQuantObserver


def test_four_bit_ranges_are_in_the_graph(requant_w4a4) -> None:
    q = requant_w4a4[2]
    for node in _nodes(q, "quantize_per_tensor"):
        assert tuple(node.args[3:6]) == (0, 15, torch.uint8), node.args
    for node in _nodes(q, "dequantize_per_channel"):
        assert tuple(node.args[4:7]) == (-8, 7, torch.int8), node.args
        weight = getattr(q, node.args[0].target)
        assert weight.dtype == torch.int8 and int(weight.min()) >= -8 and int(weight.max()) <= 7


def test_xnnpack_ranges(exported) -> None:
    _, ep = exported
    q = convert_pt2e(_prepare(ep, get_requant_quantizer(4, 4, backend="xnnpack")))
    assert _nodes(q, "quantize_per_tensor")
    (out,) = [n for n in q.graph.nodes if n.op == "output"]
    returned = {n for dq in out.all_input_nodes for n in dq.all_input_nodes}
    for node in _nodes(q, "quantize_per_tensor"):  # the logits (the graph output) keep 8 bits
        assert tuple(node.args[3:6]) == ((-128, 127) if node in returned else (-8, 7)) + (torch.int8,)
    assert any(n in returned for n in _nodes(q, "quantize_per_tensor"))
    for node in _nodes(q, "dequantize_per_channel"):
        assert tuple(node.args[4:7]) == (-7, 7, torch.int8)


def test_weight_search_runs_once_although_pt2e_observes_every_batch(requant_w4a4) -> None:
    weights = [m for m in requant_w4a4[1].values() if isinstance(m, PerChannelREQuantObserver)]
    assert len(weights) == 3
    assert all(w.searches == 1 for w in weights)  # 5 calibration batches, one search each
    assert all(w.ch_axis == 0 and w.alpha.numel() == w.min_val.numel() > 1 for w in weights)


def test_ch_axis_is_forwarded_to_per_channel_class() -> None:
    """Trap 2: pt2e passes ch_axis only to classes whose name contains 'PerChannel'."""
    assert "PerChannel" in PerChannelREQuantObserver.__name__
    assert "PerChannel" in ao_observers.PerChannelREQuantObserver.__name__
    from torchao.quantization.pt2e.prepare import _create_obs_or_fq_from_qspec

    spec = QuantizationSpec(dtype=torch.int8, quant_min=-8, quant_max=7, ch_axis=1,
                            qscheme=torch.per_channel_symmetric,
                            observer_or_fake_quant_ctr=PerChannelREQuantObserver.with_args(eps=2**-12))
    obs = _create_obs_or_fq_from_qspec(spec, {}, False)
    assert isinstance(obs, PerChannelREQuantObserver) and obs.ch_axis == 1 and obs.quant_max == 7


def test_constructors_are_torchao_partial_wrappers() -> None:
    """Trap 3: torch.ao's _PartialWrapper or functools.partial break prepare_pt2e."""
    cfg = get_requant_quantization_config(4, 8)
    assert isinstance(cfg.input_activation.observer_or_fake_quant_ctr, PartialWrapper)
    assert isinstance(cfg.weight.observer_or_fake_quant_ctr, PartialWrapper)
    assert (cfg.input_activation.quant_min, cfg.input_activation.quant_max) == (0, 255)
    assert (cfg.weight.quant_min, cfg.weight.quant_max) == (-8, 7)


def test_minmax_search_equals_torchao_minmax_observers(exported) -> None:
    from torchao.quantization.pt2e import MinMaxObserver, PerChannelMinMaxObserver

    _, ep = exported
    ref_cfg = get_torchao_default_quantization_config(4, 4)
    ref_cfg = QuantizationConfig(
        *(QuantizationSpec(**{**spec.__dict__, "observer_or_fake_quant_ctr": ctr.with_args(eps=2**-12)})
          for spec, ctr in ((ref_cfg.input_activation, MinMaxObserver), (ref_cfg.output_activation, MinMaxObserver),
                            (ref_cfg.weight, PerChannelMinMaxObserver))), None, False)
    ref = convert_pt2e(_prepare(ep, make_quantizer(ref_cfg)))
    ours = convert_pt2e(_prepare(ep, get_requant_quantizer(4, 4, search="minmax")))
    ref_args = [n.args[1:3] for n in _nodes(ref, "quantize_per_tensor")]
    our_args = [n.args[1:3] for n in _nodes(ours, "quantize_per_tensor")]
    assert ref_args == our_args
    for a, b in zip(_nodes(ref, "dequantize_per_channel"), _nodes(ours, "dequantize_per_channel"), strict=True):
        assert torch.equal(getattr(ref, a.args[1].target), getattr(ours, b.args[1].target))
        assert torch.equal(getattr(ref, a.args[0].target), getattr(ours, b.args[0].target))


def test_quantized_model_runs_any_batch_and_tracks_float(exported, requant_w4a4) -> None:
    """Trap 9: dynamic batch via dynamic_shapes; train/eval via allow_exported_model_train_eval."""
    net, ep = exported
    q8 = convert_pt2e(_prepare(ep, get_requant_quantizer(8, 8)))
    allow_exported_model_train_eval(q8)
    q8.eval()
    for n in (1, 5):
        x = torch.randn(n, 3, 10, 10)
        with torch.no_grad():
            ref, out = net(x), q8(x)
        assert out.shape == (n, 4)
        assert float(((out - ref) ** 2).mean() / (ref**2).mean()) < 0.02


def test_pt2e_observer_state_roundtrip(exported, requant_w4a4) -> None:
    _, ep = exported
    state = requant_w4a4[0]
    assert state
    fresh = prepare_pt2e(ep.module(), get_requant_quantizer(weight_bits=4, act_bits=4))
    fresh.load_state_dict(state, strict=False)
    x = torch.randn(3, 3, 10, 10)
    assert torch.equal(requant_w4a4[2](x), convert_pt2e(fresh)(x))


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="symmetric weights only"):
        get_requant_quantization_config(weight_symmetric=False)
    with pytest.raises(ValueError, match="symmetric weights only"):
        get_requant_quantization_config(backend="xnnpack", weight_symmetric=False)
    with pytest.raises(ValueError, match="is_qat"):
        get_requant_quantization_config(is_qat=True)
    with pytest.raises(ValueError, match="unknown pt2e backend"):
        get_requant_quantizer(backend="onednn")
    with pytest.raises(ValueError, match="act_search"):
        get_requant_quantization_config(act_search="kl")


def test_calibration_under_inference_mode_matches_no_grad(exported, requant_w4a4) -> None:
    _, ep = exported
    prepared = prepare_pt2e(ep.module(), get_requant_quantizer(weight_bits=4, act_bits=4))
    with torch.inference_mode():
        for x in BATCHES:
            prepared(x)
    quantized = convert_pt2e(prepared)
    x = torch.randn(3, 3, 10, 10)
    assert torch.equal(quantized(x), requant_w4a4[2](x))


def test_act_sample_size_reaches_the_pt2e_activation_observer() -> None:
    for size in (None, 8192):
        cfg = get_requant_quantization_config(8, 8, act_sample_size=size)
        obs = cfg.input_activation.observer_or_fake_quant_ctr()
        assert isinstance(obs, REQuantObserver) and obs.sample_size == size
