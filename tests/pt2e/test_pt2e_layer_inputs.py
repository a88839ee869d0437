"""Per-layer input widths in the pt2e graph (``observers.layer_inputs``): ``end_bits=8`` at W4A4
puts the first and last layers' weights AND inputs at 8 bits in the converted graph, the other
layers keep 4-bit inputs; names that are not layers of the graph are refused.

References: the ``dequantize_per_tensor`` nodes torchao writes (their code range is the observer's),
the converted graph's int8 weight codes, and the float model's output (the error must drop when the
input image and the pooled features keep 8 bits).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")

from refs.graphs import layer_input_qparams, levels, returned
from refs.nets import PoolNet as Net
from refs.nets import Residual, residual_integer_logits
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

from requant_plugin import quantize_weights
from requant_plugin.observers.layer_inputs import layer_nodes, set_input_bits
from requant_plugin.pt2e import get_requant_quantizer

CALIB = [torch.randn(16, 3, 10, 10, generator=torch.Generator().manual_seed(i)) for i in range(3)]


def _converted(model: nn.Module, quantizer) -> torch.fx.GraphModule:
    prepared = prepare_pt2e(torch.export.export(model, (CALIB[0],)).module(), quantizer)
    with torch.no_grad():
        for x in CALIB:
            prepared(x)
    return convert_pt2e(prepared)


def _input_levels(q: torch.fx.GraphModule) -> dict[str, int]:
    """Per layer, the number of codes of the dequantize node that feeds its input."""
    out = {}
    for name, (node,) in layer_nodes(q.graph).items():
        dq = node.args[0]
        assert "dequantize_per_tensor" in str(dq.target), name
        out[name] = levels(dq)
    return out


def _quantized(end_bits: int | None, **options) -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    return quantize_weights(Net().eval(), 4, recipe="beyond-tensorrt", calibration_data=CALIB, act_bits=4,
                            end_bits=end_bits, **options)


@pytest.mark.parametrize("backend", ["x86_inductor", "xnnpack"])
def test_end_bits_reach_the_graph(backend: str) -> None:
    qmodel, rep = _quantized(8)
    q = _converted(qmodel, get_requant_quantizer(4, 4, backend=backend, weight_ranges=rep))
    assert _input_levels(q) == {"conv1": 256, "conv2": 16, "fc": 256}
    nodes = list(q.graph.nodes)
    pool = next(i for i, n in enumerate(nodes) if "adaptive_avg_pool2d" in str(n.target))
    pooled = [n for n in nodes[pool:] if "dequantize_per_tensor" in str(n.target)
              and all(u.op != "output" for u in n.users)]
    assert pooled and all(int(dq.args[4]) - int(dq.args[3]) == 255 for dq in pooled)  # the classifier's input
    spans = {}
    for node in q.graph.nodes:
        if "dequantize_per_channel" in str(node.target):
            codes = getattr(q, node.args[0].target)
            spans[tuple(codes.shape)] = int(codes.abs().max())
    assert spans[(8, 3, 3, 3)] > 7 and spans[(5, 16)] > 7 and spans[(16, 8, 3, 3)] <= 8  # 8-bit ends, 4-bit middle


def test_layer_override_sets_one_layers_input_width() -> None:
    qmodel, rep = _quantized(None, overrides={"conv2": {"act_bits": 8}})
    assert rep.act_bits == {"conv1": 4, "conv2": 8, "fc": 4}
    q = _converted(qmodel, get_requant_quantizer(4, 4, weight_ranges=rep))
    assert _input_levels(q) == {"conv1": 16, "conv2": 256, "fc": 16}


def test_eight_bit_ends_lower_the_output_error() -> None:
    torch.manual_seed(0)
    ref = Net().eval()
    x = torch.cat(CALIB)
    with torch.no_grad():
        target = ref(x)
    errors = {}
    for end_bits in (None, 8):
        torch.manual_seed(0)
        qmodel, rep = quantize_weights(ref, 4, recipe="beyond-tensorrt", calibration_data=CALIB, act_bits=4,
                                       end_bits=end_bits)
        q = _converted(qmodel, get_requant_quantizer(4, 4, weight_ranges=rep))
        with torch.no_grad():
            out = torch.cat([q(b) for b in CALIB])  # the graph is exported for batches of 16
            errors[end_bits] = float(((out - target) ** 2).mean())
    assert errors[8] < 0.7 * errors[None]


def test_unknown_layer_names_are_refused() -> None:
    quantizer = set_input_bits(get_requant_quantizer(4, 4), {"nope": 8}, lambda b: nn.Identity())
    with pytest.raises(ValueError, match=r"\['nope'\].*its layers are: \['conv1', 'conv2', 'fc'\]"):
        prepare_pt2e(torch.export.export(Net().eval(), (CALIB[0],)).module(), quantizer)


def test_unknown_pinned_layer_names_are_refused() -> None:
    """A report from another model (its layer names absent from this graph) is refused, not silently ignored."""
    quantizer = set_input_bits(get_requant_quantizer(4, 4), {}, lambda b: nn.Identity(),
                               pinned={"layer9.conv": nn.Identity})
    with pytest.raises(ValueError, match=r"\['layer9.conv'\].*its layers are: \['conv1', 'conv2', 'fc'\]"):
        prepare_pt2e(torch.export.export(Net().eval(), (CALIB[0],)).module(), quantizer)


def test_fx_mapping_refuses_per_layer_input_widths() -> None:
    from requant_plugin.qconfig import get_requant_qconfig_mapping

    _, rep = _quantized(8)
    with pytest.raises(ValueError, match=r"\['conv1', 'fc'\] on inputs of their own width.*pt2e flow only"):
        get_requant_qconfig_mapping(4, 4, weight_ranges=rep)
    _, same = _quantized(None)
    get_requant_qconfig_mapping(4, 4, weight_ranges=same)  # one width everywhere: as before


def test_end_bits_on_a_torchvision_style_mobilenet_v2() -> None:
    """A network not built for these tests (torchvision's MobileNetV2 layout, ``benchmarks.archs``, 32 px):
    its stem conv and the classifier Linear behind average pooling, flatten and Dropout get 8-bit inputs
    in the converted graph, every other Conv/Linear (depthwise and pointwise) 4-bit ones."""
    from benchmarks.archs import build

    torch.manual_seed(0)
    model = build("mobilenet_v2", num_classes=10, image_size=32).eval()
    calib = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    qmodel, rep = quantize_weights(model, 4, recipe="beyond-tensorrt", calibration_data=calib, act_bits=4,
                                   end_bits=8, progress=False)
    assert {n for n, b in rep.act_bits.items() if b == 8} == {"features.0.0", "classifier.1"}
    prepared = prepare_pt2e(torch.export.export(qmodel, (calib[0],)).module(),
                            get_requant_quantizer(4, 4, weight_ranges=rep))
    with torch.no_grad():
        for x in calib:
            prepared(x)
    levels = _input_levels(convert_pt2e(prepared))
    assert levels.pop("features.0.0") == 256 and levels.pop("classifier.1") == 256
    assert len(levels) > 40 and set(levels.values()) == {16}


def _input_scales(q: torch.fx.GraphModule, layer: str) -> tuple[float | None, float]:
    """The scales of the dequantize nodes feeding the average pool (``None``: it reads a float tensor)
    and ``layer``."""
    pool = next(n for n in q.graph.nodes if "adaptive_avg_pool2d" in str(n.target))
    (node,) = layer_nodes(q.graph)[layer]
    before = float(pool.args[0].args[1]) if "dequantize" in str(pool.args[0].target) else None
    return before, float(node.args[0].args[1])


@pytest.mark.parametrize("backend", ["x86_inductor", "xnnpack"])
def test_pooled_features_get_their_own_range_below_eight_bits(backend: str) -> None:
    """At A4 a CIFAR ResNet-20's classifier reads the pooled features through its own observer, whose
    scale is what an observer of the same spec computes on those features alone (captured from the
    float model); at A8, or with ``pooled_input="shared"``, it reads them at the pool input's scale
    (torchao's annotation)."""
    from requant_plugin.observers.pt2e import get_requant_quantization_config, observer_from_spec
    from requant_plugin.zoo.resnet_cifar import resnet20

    torch.manual_seed(0)
    net = resnet20().eval()
    calib = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    ref = observer_from_spec(get_requant_quantization_config(8, 4).input_activation)
    hook = net.linear.register_forward_pre_hook(lambda _m, args: ref(args[0]))
    with torch.no_grad():
        for x in calib:
            net(x)
    hook.remove()

    def scales(**options: object) -> tuple[float, float]:
        prepared = prepare_pt2e(torch.export.export(net, (calib[0],)).module(),
                                get_requant_quantizer(8, backend=backend, **options))
        with torch.no_grad():
            for x in calib:
                prepared(x)
        return _input_scales(convert_pt2e(prepared), "linear")

    own = scales(act_bits=4)
    assert own[1] == pytest.approx(float(ref.calculate_qparams()[0]), rel=1e-4)
    assert own[0] is None  # the pool averages the float ReLU output: the features are quantized once
    shared = scales(act_bits=4, pooled_input="shared")
    assert shared[0] == shared[1]  # one observer saw the ReLU output and the pooled features
    assert own[1] < 0.8 * shared[1]
    at8 = scales(act_bits=8)
    assert at8[0] == at8[1]
    forced = scales(act_bits=8, pooled_input="own")
    assert forced[0] is None and forced[1] < at8[1]


@pytest.mark.parametrize("backend", ["x86_inductor", "xnnpack"])
def test_the_graph_computes_the_act_bits_simulation(backend: str) -> None:
    """With ``weight_ranges`` at W4A4 the converted graph of a conv-ReLU-conv-ReLU-pool-linear net equals
    the eager model with each layer input fake-quantized on the graph's own qparams (the ``act_bits``
    simulation): the weights are the report's, and the pooled features are quantized once, after the pool."""
    from requant_plugin.ptq.activation_sim import fake_quant_activations
    from requant_plugin.range.fake_quant import fake_quant_per_tensor

    qw, rep = _quantized(None)
    q = _converted(qw, get_requant_quantizer(4, 4, backend=backend, weight_ranges=rep))
    qparams = layer_input_qparams(q)
    assert sorted(qparams) == ["conv1", "conv2", "fc"] and {p.quant_max - p.quant_min for p in qparams.values()} == {15}
    x = torch.randn(16, 3, 10, 10, generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), fake_quant_activations(qw, qparams):
        expected = qw(x)
    (out,) = returned(q)
    if "dequantize" in str(out.target):  # xnnpack also quantizes the linear's output (the logits), at 8 bits
        assert backend == "xnnpack" and levels(out) == 256
        expected = fake_quant_per_tensor(expected, *(out.args[i] for i in range(1, 5)))
    torch.testing.assert_close(q(x), expected, rtol=1e-4, atol=1e-5)
    # the graph's input ranges are the ones the report simulated (x86's codes 0..15, xnnpack's -8..7)
    for name, qp in rep.act_qparams.items():
        assert qparams[name].scale == pytest.approx(qp.scale, rel=1e-5), name
        assert qparams[name].zero_point - qparams[name].quant_min == qp.zero_point - qp.quant_min, name


def test_the_graph_computes_the_simulation_with_its_shortcuts() -> None:
    """In a residual net at W4A4 (x86) the skip adds the block input's 4-bit codes, the tensor the next conv
    reads: the converted graph equals that arithmetic written out, which ``act_shortcuts`` simulates."""
    torch.manual_seed(0)
    qw, rep = quantize_weights(Residual().eval(), 4, recipe="beyond-tensorrt", calibration_data=CALIB, act_bits=4)
    q = _converted(qw, get_requant_quantizer(4, 4, weight_ranges=rep))
    qparams = layer_input_qparams(q)
    assert sorted(qparams) == sorted(rep.act_qparams)
    x = torch.randn(16, 3, 10, 10, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = residual_integer_logits(qw, qparams, x)
    torch.testing.assert_close(q(x), expected, rtol=1e-4, atol=1e-5)


def test_act_ranges_observed_searches_on_the_graph() -> None:
    """``act_ranges="observed"``: the layer inputs search their own ranges on the graph's calibration
    data (the ``quantize_weights`` model, quantized weights), which differ from the simulated ones."""
    qw, rep = _quantized(None)
    scales = {}
    for mode in ("report", "observed"):
        q = _converted(qw, get_requant_quantizer(4, 4, weight_ranges=rep, act_ranges=mode))
        scales[mode] = {n: qp.scale for n, qp in layer_input_qparams(q).items()}
    assert scales["report"] == pytest.approx({n: qp.scale for n, qp in rep.act_qparams.items()}, rel=1e-5)
    assert scales["observed"] != pytest.approx(scales["report"], rel=1e-3)
    with pytest.raises(ValueError, match=r"act_ranges must be one of \['report', 'observed'\]"):
        get_requant_quantizer(4, 4, act_ranges="float")


def test_pooled_input_values_are_checked() -> None:
    from requant_plugin.qconfig import get_requant_qconfig

    with pytest.raises(ValueError, match=r"pooled_input must be one of \['shared', 'own'\]"):
        get_requant_quantizer(4, 4, pooled_input="mine")
    with pytest.raises(ValueError, match="pt2e option"):
        get_requant_qconfig(4, 4, pooled_input="own")
    get_requant_qconfig(4, 4, pooled_input="shared")  # what FX does anyway


def _add_operands(q: torch.fx.GraphModule) -> list[list[torch.fx.Node]]:
    """Per add of two tensors, its operands that are dequantize nodes."""
    return [[a for a in n.args[:2] if "dequantize_per_tensor" in str(a.target)]
            for n in q.graph.nodes if n.op == "call_function" and "aten.add" in str(n.target)
            and all(isinstance(a, torch.fx.Node) for a in n.args[:2])]


@pytest.mark.parametrize("backend", ["x86_inductor", "xnnpack"])
def test_residual_operands_get_their_own_width(backend: str) -> None:
    """With ``residual_bits=8`` at A4, every quantized operand of a ResNet-20's residual adds reads 256
    codes on the scale an 8-bit observer of the same spec computes on the block input alone (captured
    from the float model), while every Conv/Linear input keeps 16 codes; by default the shortcut shares
    the 16 codes and the scale of the next block's first conv input."""
    from requant_plugin.observers.pt2e import get_requant_quantization_config, observer_from_spec
    from requant_plugin.zoo.resnet_cifar import resnet20

    torch.manual_seed(0)
    net = resnet20().eval()
    calib = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    ref = observer_from_spec(get_requant_quantization_config(8, 8).input_activation)
    hook = net.layer1[0].relu2.register_forward_hook(lambda _m, _a, out: ref(out))
    with torch.no_grad():
        for x in calib:
            net(x)
    hook.remove()

    def converted(**options: object) -> torch.fx.GraphModule:
        prepared = prepare_pt2e(torch.export.export(net, (calib[0],)).module(),
                                get_requant_quantizer(8, 4, backend=backend, **options))
        with torch.no_grad():
            for x in calib:
                prepared(x)
        return convert_pt2e(prepared)

    def levels(dq: torch.fx.Node) -> int:
        return int(dq.args[4]) - int(dq.args[3]) + 1

    own, shared = converted(residual_bits=8), converted()
    for q, width in ((own, 256), (shared, 16)):
        adds = _add_operands(q)
        assert len(adds) == 9 and all(adds), "one quantized shortcut per residual block"
        assert all(levels(dq) == width for ops in adds for dq in ops)
        assert set(_input_levels(q).values()) == {16}
    (dq,) = [a for a in _add_operands(own)[1] if "relu" in str(a.args[0].args[0].target)]  # the shortcut
    assert float(dq.args[1]) == pytest.approx(float(ref.calculate_qparams()[0]), rel=1e-4)
    conv1 = layer_nodes(shared.graph)["layer1.1.conv1"][0].args[0]
    assert any(dq.args[1:] == conv1.args[1:] for dq in _add_operands(shared)[1])


def test_residual_bits_are_checked() -> None:
    from requant_plugin.qconfig import get_requant_qconfig

    with pytest.raises(ValueError, match="bits=1 is not supported"):
        get_requant_quantizer(4, 4, residual_bits=1)
    with pytest.raises(ValueError, match="residual_bits=8 is a pt2e option"):
        get_requant_qconfig(4, 4, residual_bits=8)


@pytest.mark.parametrize("option", ["act_shortcuts", "residual_correction"])
def test_residual_bits_warn_on_weights_calibrated_with_quantized_shortcuts(option: str) -> None:
    torch.manual_seed(0)
    _, rep = quantize_weights(Residual().eval(), 4, recipe="beyond-tensorrt", calibration_data=CALIB, act_bits=4,
                              **{option: True})
    with pytest.warns(UserWarning, match=rf"residual_bits=8 gives the shortcuts their own observers: calibrate "
                                         rf"with {option}=False"):
        get_requant_quantizer(4, 4, weight_ranges=rep, residual_bits=8)
    get_requant_quantizer(4, 4, weight_ranges=rep)  # the graph then reads them as simulated: no warning


@pytest.mark.parametrize("backend", ["x86_inductor", "xnnpack"])
def test_an_own_width_input_reads_the_float_activation(backend: str) -> None:
    """A layer given its own input width quantizes the float activation, not the dequantized codes of the
    global width: on xnnpack the ReLU output carries its own observer, which the new one must not follow."""
    qmodel, rep = _quantized(None, overrides={"conv2": {"bits": 8, "act_bits": 8}})
    q = _converted(qmodel, get_requant_quantizer(4, 4, backend=backend, weight_ranges=rep))
    assert _input_levels(q) == {"conv1": 16, "conv2": 256, "fc": 16}
    (conv2,) = layer_nodes(q.graph)["conv2"]
    quantize = conv2.args[0].args[0]
    assert "quantize_per_tensor" in str(quantize.target)
    assert "relu" in str(quantize.args[0].target), f"conv2 re-quantizes {quantize.args[0].target}"


@pytest.mark.parametrize("act_bits", [4, 8])
def test_xnnpack_logits_keep_eight_bits(act_bits: int) -> None:
    """torchao's XNNPACK quantizer observes the Linear's output, the graph output: at A4 alone it would give
    the logits 16 levels; the REQuant quantizer gives them 256 (at A8 the two agree)."""
    from requant_plugin.pt2e import get_requant_quantization_config, make_quantizer

    def output_levels(quantizer) -> int:
        (out,) = returned(_converted(Net().eval(), quantizer))
        assert "dequantize_per_tensor" in str(out.target)
        return levels(out)

    torch.manual_seed(0)
    plain = make_quantizer(get_requant_quantization_config(4, act_bits, backend="xnnpack"), "xnnpack")
    assert output_levels(plain) == 2 ** act_bits
    assert output_levels(get_requant_quantizer(4, act_bits, backend="xnnpack")) == 256


class Features(nn.Module):
    """Returns the features the classifier reads as well as the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.mid, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 8), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mid(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1), 1))
        return h, self.fc(h)


def test_a_returned_layer_input_keeps_the_activation_width() -> None:
    """Only values nothing but the graph output reads get 8 bits: returned features the classifier also reads
    stay its 4-bit input (xnnpack, A4)."""
    torch.manual_seed(0)
    q = _converted(Features().eval(), get_requant_quantizer(4, 4, backend="xnnpack"))
    assert _input_levels(q) == {"conv": 16, "mid": 16, "fc": 16}
    assert [levels(dq) for dq in returned(q)] == [16, 256]
