"""The FX and pt2e flows end to end: prepare a copy, run the calibration batches, (refine,) convert.

Used by the integration scripts (``integrations/fx_qconfig.py``, ``integrations/pt2e_quantize.py``),
the benchmarks and the tests. ``model`` is never modified: each flow works on a deep copy.
"""

from __future__ import annotations

import copy
import inspect
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..deps import require
from .lowering import convert_fx_lowered, prepare_fx_lowerable
from .untie import unshare_reused_layers, untie_graph_weights

if TYPE_CHECKING:
    from .refine import RefineConfig

__all__ = [
    "check_converted_runs", "check_fx_model", "check_quantized", "convert_pt2e_eval", "count_qdq", "default_mapping",
    "forward_arg", "prepare_calibrated", "prepare_pt2e_calibrated", "print_refinement", "quantize_fx", "quantize_pt2e",
]


def forward_arg(model: nn.Module) -> str:
    """Name of the model's (first) forward argument, for ``torch.export`` dynamic shapes."""
    return next(iter(inspect.signature(model.forward).parameters))


def check_fx_model(model: nn.Module) -> None:
    """Refuse, before calibrating, what ``convert_fx`` cannot lower: non-float32 parameters/buffers
    (torch.ao's quantized kernels take float32 only) and NaN/Inf weights (which would surface as
    NaN activations in the next observer)."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and t.dtype != torch.float32:
            raise TypeError(
                f"torch.ao FX quantization: {name!r} is {t.dtype}; convert_fx lowers float32 models only: "
                "quantize model.float() (or use the pt2e flow, integrations/pt2e_quantize.py, which takes "
                "fp16/bf16 models)"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(
                f"torch.ao FX quantization: the weights of {name!r} have NaN/Inf values; REQuant needs "
                "finite weights: fix or reload that layer's weights before quantizing"
            )


def prepare_calibrated(model: nn.Module, qconfig_mapping: Any, calibration: Sequence[torch.Tensor],
                       backend: str = "x86") -> tuple[torch.fx.GraphModule, float]:
    """``prepare_fx`` on a copy of ``model`` (checked by :func:`check_fx_model`, not modified) and the
    calibration batches through it (seconds measured)."""
    check_fx_model(model)
    torch.backends.quantized.engine = backend
    # prepare_fx fuses a conv with its BatchNorm: a conv called twice gets one copy per call
    prepared = prepare_fx_lowerable(unshare_reused_layers(copy.deepcopy(model).eval()), qconfig_mapping,
                                    (calibration[0],))
    start = time.perf_counter()
    with torch.no_grad():
        for x in calibration:
            prepared(x)
    return prepared, time.perf_counter() - start


def quantize_fx(model: nn.Module, qconfig_mapping: Any, calibration: Sequence[torch.Tensor],
                backend: str = "x86", *, refine: RefineConfig | bool = False) -> tuple[nn.Module, float]:
    """:func:`prepare_calibrated` -> ``convert_fx``; ``refine`` (``True``: the default
    :class:`~requant_plugin.refine.RefineConfig`, or one) fits the REQuant activation ranges' shared
    factor on the output error of the calibration batches before converting
    (:func:`requant_plugin.refine.refine_activation_ranges`, not included in the seconds)."""
    prepared, seconds = prepare_calibrated(model, qconfig_mapping, calibration, backend)
    _refine(prepared, model, calibration, refine, "fx")
    converted = convert_fx_lowered(prepared)
    check_converted_runs(converted, calibration[0][:1], backend)
    return converted, seconds


def check_converted_runs(converted: nn.Module, sample: torch.Tensor, backend: str = "x86") -> None:
    """Run one sample through a converted FX graph node by node; when torch's int8 kernels cannot
    run a node (e.g. ``x.mean([2, 3])`` on a quantized channels_last tensor), raise a RuntimeError
    naming the node, its call and the fix instead of torch's bare message."""
    class _Locate(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            try:
                return super().run_node(n)
            except Exception as exc:
                call = f"{getattr(n.target, '__name__', n.target)}{tuple(str(a) for a in n.args)}"
                after = [str(a.target) for a in n.all_input_nodes if a.op == "call_module"]
                source = f", on the output of module {', '.join(map(repr, after))}" if after else ""
                raise RuntimeError(
                    f"convert_fx ({backend}): the quantized graph cannot run node {n.name!r} ({n.op} {call}"
                    f"{source}): "
                    f"{exc}. torch's int8 kernels cannot execute this op on a quantized tensor (usual cases: "
                    "x.mean([2, 3]) without keepdim or a 5-D view of a channels_last tensor). Fix: write it as "
                    "x.mean([2, 3], keepdim=True).flatten(1) or nn.AdaptiveAvgPool2d(1), keep the module holding "
                    "it in float (qconfig_mapping.set_module_name(<module>, None)), or use the pt2e flow "
                    "(quantize_pt2e)"
                ) from exc
    gm: Any = converted
    with torch.no_grad():
        _Locate(gm).run(sample)


def prepare_pt2e_calibrated(model: nn.Module, quantizer: Any, calibration: Sequence[torch.Tensor],
                            ) -> tuple[nn.Module, float]:
    """``torch.export`` (dynamic batch) -> ``prepare_pt2e`` -> calibration; the prepared graph and the
    calibration seconds. ``model`` is not modified: a contiguous deep copy is exported (so parameters
    created under ``torch.inference_mode()`` and channels_last models give the plain model's result)."""
    flow = require("torchao.quantization.pt2e.quantize_pt2e", "the pt2e flow")
    batch = torch.export.Dim("batch", min=1)
    # a copy: the user's model keeps its mode, inference-mode parameters become ordinary tensors
    # (torch.export cannot trace inference tensors) and weights contiguous (a channels_last conv sums
    # in another order, so the observers would see activations a few ulps apart from the plain
    # model's; Inductor picks its own layouts when compiling); fp16/bf16 models export as they are
    twin: Any = copy.deepcopy(model)  # Module.to's stubs omit memory_format
    plain = twin.to(memory_format=torch.contiguous_format).eval()
    exported = torch.export.export(plain, (calibration[0],),
                                   dynamic_shapes={forward_arg(model): {0: batch}})
    graph = exported.module()
    untie_graph_weights(graph)  # prepare_pt2e folds BatchNorms into weights in place: one weight per call
    prepared: nn.Module = flow.prepare_pt2e(graph, quantizer)
    start = time.perf_counter()
    with torch.no_grad():
        for x in calibration:
            prepared(x)
    return prepared, time.perf_counter() - start


def convert_pt2e_eval(prepared: nn.Module) -> nn.Module:
    """``convert_pt2e(prepared)`` in eval mode (``allow_exported_model_train_eval``: exported modules
    otherwise refuse ``.eval()``/``.train()``); ``prepared`` becomes the converted graph."""
    pt2e = require("torchao.quantization.pt2e", "the pt2e flow")
    flow = require("torchao.quantization.pt2e.quantize_pt2e", "the pt2e flow")
    quantized: nn.Module = flow.convert_pt2e(prepared)
    pt2e.allow_exported_model_train_eval(quantized)
    quantized.eval()  # the patched eval() returns None, not the module
    return quantized


def quantize_pt2e(model: nn.Module, quantizer: Any, calibration: Sequence[torch.Tensor], *,
                  refine: RefineConfig | bool = False) -> tuple[nn.Module, float]:
    """:func:`prepare_pt2e_calibrated` (timed) -> optional refinement -> :func:`convert_pt2e_eval`.

    ``refine`` (``True``: the default :class:`~requant_plugin.refine.RefineConfig`, or one, e.g. with
    ``layer_factors=LAYER_FACTORS``) fits the REQuant activation ranges' factors on the calibration
    batches' output error before converting (:func:`requant_plugin.refine.refine_activation_ranges`,
    not included in the seconds). ``model`` is not modified.
    """
    prepared, seconds = prepare_pt2e_calibrated(model, quantizer, calibration)
    _refine(prepared, model, calibration, refine, "pt2e")
    return convert_pt2e_eval(prepared), seconds


def _refine(prepared: nn.Module, model: nn.Module, calibration: Sequence[torch.Tensor],
            refine: RefineConfig | bool, flow: str) -> None:
    """Run :func:`~requant_plugin.refine.refine_activation_ranges` on ``prepared`` when ``refine`` asks."""
    if refine is False:
        return
    from .refine import RefineConfig, refine_activation_ranges

    config = RefineConfig() if refine is True else refine
    if not isinstance(config, RefineConfig):
        raise TypeError(f"refine must be a bool or a RefineConfig, got {type(refine).__name__}")
    print_refinement(refine_activation_ranges(prepared, model, calibration, config, flow=flow))


def print_refinement(res: Any) -> None:
    """One stderr line for a :class:`requant_plugin.refine.RangeRefinement`."""
    own = f", {len(res.layer_factors)} observers with their own factor" if res.layer_factors else ""
    print(f"[refine] activation range factor {res.factor:.3f}: calibration output MSE "
          f"{res.error_at_one:.4g} -> {res.error:.4g} ({res.evaluations} evaluations on {res.images} images{own})",
          file=sys.stderr)


def default_mapping(backend: str = "x86") -> Any:
    """torch's default qconfig mapping (HistogramObserver + PerChannelMinMaxObserver on x86)."""
    from torch.ao.quantization import get_default_qconfig_mapping

    return get_default_qconfig_mapping(backend)


def check_quantized(model: nn.Module) -> int:
    """Number of quantized conv/linear modules (a wrong dtype silently leaves float modules)."""
    kinds = (torch.ao.nn.quantized.Conv2d, torch.ao.nn.quantized.Linear)
    return sum(isinstance(m, kinds) for m in model.modules())


def count_qdq(model: nn.Module) -> dict[str, int]:
    """Number of ``quantized_decomposed`` q/dq nodes by op (0 means nothing was quantized)."""
    graph = getattr(model, "graph", None)
    counts: dict[str, int] = {}
    for node in [] if graph is None else graph.nodes:
        target = str(node.target)
        if "quantized_decomposed" in target:
            op = target.split(".")[-2]
            counts[op] = counts.get(op, 0) + 1
    return counts
