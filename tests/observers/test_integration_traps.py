"""Regression tests for the gotchas checklist of shared/reference/integration.md §5.

Where each trap is covered:

1. torch.ao vs torchao observer classes (wrong one = no q/dq): ``tests/pt2e/test_pt2e_observers.py::
   test_torch_ao_observers_in_pt2e_silently_do_nothing`` and ``test_qdq_counts_match_torchao_default_structure``.
2. ``ch_axis`` only for ``PerChannel`` class names: ``test_ch_axis_is_forwarded_to_per_channel_class``.
3. torchao ``PartialWrapper`` constructors: ``test_constructors_are_torchao_partial_wrappers``.
4. lowered FX ignores sub-8-bit ranges, pt2e/decomposed honour them: below, and
   ``test_four_bit_ranges_are_in_the_graph``.
5. silently skipped FX ops: below (negative control) and ``test_qconfig_mapping.py::
   test_converted_modules_are_quantized``.
6. symmetric weights on onednn/TensorRT: ``test_asymmetric_weights_rejected_on_symmetric_backends``
   and pt2e's ``test_configuration_errors``.
7. weight observer once in FX, every batch in pt2e: below (FX) and
   ``test_weight_search_runs_once_although_pt2e_observes_every_batch``.
8. empty buffers on load: ``test_observer_state.py::test_state_dict_roundtrip_before_any_data``.
9. ``dynamic_shapes`` and train/eval of exported modules: ``test_quantized_model_runs_any_batch_and_tracks_float``.
10. Lightning rules: the callback's own tests (``tests/lightning``); here: observer state is plain
    tensors that load with ``weights_only=True`` (``test_observer_state.py::_roundtrip``).
11. ``quant_min/quant_max`` instead of ``reduce_range``: ``test_reduce_range_is_expressed_with_quant_min_max``.
12. torchao imported lazily: ``tests/pt2e/test_pt2e_optional_import.py``.
13. ``-W error``: the whole suite runs with warnings as errors; below, the REQuant flow adds no warning.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.ao.quantization import QConfig, QConfigMapping
from torch.ao.quantization.quantize_fx import _convert_to_reference_decomposed_fx, convert_fx, prepare_fx

from requant_plugin import get_requant_qconfig_mapping
from requant_plugin.observers import PerChannelREQuantObserver, REQuantObserver


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()


DATA = [torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(3)]


def _prepare(mapping: QConfigMapping) -> torch.fx.GraphModule:
    prepared = prepare_fx(_net(), mapping, (DATA[0],))
    with torch.no_grad():
        for x in DATA:
            prepared(x)
    return prepared


def test_trap4_lowered_fx_clamps_to_container_but_decomposed_honours_4_bit() -> None:
    prepared = _prepare(get_requant_qconfig_mapping(weight_bits=4, act_bits=4))
    decomposed = _convert_to_reference_decomposed_fx(copy.deepcopy(prepared))
    q_nodes = [n for n in decomposed.graph.nodes if str(n.target) == "quantized_decomposed.quantize_per_tensor.default"]
    assert q_nodes and all(tuple(n.args[3:5]) == (0, 15) for n in q_nodes)
    lowered = convert_fx(prepared)
    out = lowered.get_submodule("0")(torch.quantize_per_tensor(DATA[0] * 50, 0.1, 0, torch.quint8))
    assert int(out.int_repr().max()) > 15  # the lowered int8 kernel does not clamp to 0..15


def test_trap5_wrong_dtype_leaves_float_modules_silently() -> None:
    """Negative control: qint8 activations on x86 give float modules, no error -- our mapping
    uses quint8 and yields ConvReLU2d (asserted in test_qconfig_mapping.py)."""
    wrong = QConfig(activation=REQuantObserver.with_args(dtype=torch.qint8),
                    weight=PerChannelREQuantObserver.with_args(dtype=torch.qint8,
                                                               qscheme=torch.per_channel_symmetric))
    converted = convert_fx(_prepare(QConfigMapping().set_global(wrong)))
    assert not isinstance(converted.get_submodule("0"), torch.ao.nn.intrinsic.quantized.ConvReLU2d)
    right = convert_fx(_prepare(get_requant_qconfig_mapping()))
    assert isinstance(right.get_submodule("0"), torch.ao.nn.intrinsic.quantized.ConvReLU2d)


def test_trap7_fx_builds_fresh_weight_observers_at_convert() -> None:
    """convert_fx calls qconfig.weight() once per weighted module on the BN-folded weight."""
    created: list[PerChannelREQuantObserver] = []

    class Spy(PerChannelREQuantObserver):
        def __init__(self, **kw: object) -> None:
            super().__init__(**kw)  # type: ignore[arg-type]
            created.append(self)

    mapping = QConfigMapping().set_global(QConfig(
        activation=REQuantObserver.with_args(quant_min=0, quant_max=127),
        weight=Spy.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)))
    prepared = _prepare(mapping)
    created.clear()
    convert_fx(prepared)
    observed = [c for c in created if c.searches]
    assert len(observed) == 2 and all(c.searches == 1 for c in observed)
    fused = torch.ao.quantization.fuse_modules(_net(), [["0", "1", "2"]])
    assert any(torch.equal(c.max_val, fused[0][0].weight.detach().flatten(1).amax(1)) for c in observed)


def test_trap13_requant_flow_adds_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor, torch.quantize_per_channel", UserWarning)
        quantized = convert_fx(_prepare(get_requant_qconfig_mapping()))
        quantized(DATA[0])
