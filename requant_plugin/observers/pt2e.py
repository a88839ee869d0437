"""REQuant observers and quantization configs for torchao pt2e (``prepare_pt2e`` / ``convert_pt2e``).

torchao's pt2e only recognises observers derived from *torchao's* copy of
``UniformQuantizationObserverBase`` (torch.ao observers are silently left in the graph, with no
quantize/dequantize nodes), so this module holds the torchao twins of
:mod:`requant_plugin.observers.ao`, sharing their adapters (:mod:`.weight`, :mod:`.activation`,
:mod:`.pinned`) and their spec (:class:`~requant_plugin.observers.spec.ObserverSpec`):

* :class:`REQuantObserver` (activations), :class:`REQuantWeightObserver` (per-tensor weights),
  :class:`PerChannelREQuantObserver` (per-channel weights; the name contains ``PerChannel``
  so that pt2e forwards ``ch_axis`` to it).
* :func:`get_requant_quantization_config`: a ``QuantizationConfig`` for the X86 Inductor or
  XNNPACK-style quantizers, sub-8-bit through ``quant_min``/``quant_max`` (honoured by the
  decomposed ``quantize_per_tensor`` nodes ``convert_pt2e`` emits).
* :func:`get_requant_quantizer`: that config set as the global config of a quantizer.
* :func:`get_torchao_default_quantization_config`: torchao's default observers
  (``HistogramObserver`` + ``(PerChannel)MinMaxObserver``) on the same specs, the baseline.

Export a ``copy.deepcopy`` of the model: ``torch.export`` cannot trace parameters created inside
``torch.inference_mode()`` ("Inference tensors cannot be saved for backward"), and a deep copy
holds ordinary tensors with the same values. fp16/bf16 models quantize as they are.

torchao is an optional dependency: importing this module without it raises
:class:`~requant_plugin.deps.MissingDependency` (an ImportError) with the install hint
``pip install 'requant-plugin[pt2e]'``; ``import requant_plugin.observers`` never imports it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, Literal

import torch
from torch import nn

from ..deps import require

require("torchao", "requant_plugin.pt2e (the pt2e quantization flow lives in torchao)")

from torchao.quantization.pt2e import UniformQuantizationObserverBase as _TorchaoObserverBase  # noqa: E402
from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec, Quantizer  # noqa: E402

from ..options import check_bits  # noqa: E402
from .activation import ActivationObserverMixin  # noqa: E402
from .base import RELU_MEAN_RATIO, qscheme_for  # noqa: E402
from .layer_inputs import set_input_bits  # noqa: E402
from .pinned import (  # noqa: E402
    PinnedActivationObserverMixin,
    PinnedWeightObserverMixin,
    grids_span,
    pinned_grids,
    pinned_input_ranges,
)
from .spec import PT2E_ALIASES, PT2E_BACKENDS, ObserverSpec, spec_from  # noqa: E402
from .weight import PerChannelWeightObserverMixin, WeightObserverMixin  # noqa: E402

Backend = Literal["x86_inductor", "xnnpack"]
BACKENDS: tuple[str, ...] = PT2E_BACKENDS
_ALIASES = PT2E_ALIASES
#: torchao's own default configs use this minimum scale
DEFAULT_EPS = 2.0**-12
_POSITIONAL = ("weight_bits", "act_bits")


class REQuantObserver(ActivationObserverMixin, _TorchaoObserverBase):
    """Per-tensor REQuant activation observer for torchao pt2e."""


class REQuantWeightObserver(WeightObserverMixin, _TorchaoObserverBase):
    """Per-tensor REQuant weight observer for torchao pt2e (search cached per weight)."""


class PerChannelREQuantObserver(PerChannelWeightObserverMixin, _TorchaoObserverBase):
    """Per-channel REQuant weight observer for torchao pt2e (search cached per weight)."""


class PinnedWeightObserver(PinnedWeightObserverMixin, _TorchaoObserverBase):
    """A given weight grid (a ``quantize_weights`` result) for torchao pt2e."""


class PinnedActivationObserver(PinnedActivationObserverMixin, _TorchaoObserverBase):
    """A given activation range (the one a ``quantize_weights(..., act_bits=)`` result simulated) for torchao pt2e."""


def _backend(backend: str) -> str:
    key = _ALIASES.get(backend)
    if key is None:
        raise ValueError(f"unknown pt2e backend {backend!r}: valid values are {list(BACKENDS)} "
                         "(alias 'x86' = 'x86_inductor')")
    return key


def _check_eps(eps: float) -> None:
    if not (math.isfinite(float(eps)) and float(eps) > 0.0):
        raise ValueError(f"pt2e quantization config: eps (the smallest scale) must be a finite number > 0, "
                         f"got {eps}; keep the default {DEFAULT_EPS}")


def _specs(weight_bits: int, act_bits: int, backend: str, reduce_range: bool
           ) -> tuple[torch.dtype, int, int, torch.dtype, int, int]:
    """``(act dtype, act min, act max, weight dtype, weight min, weight max)``."""
    wb, ab = check_bits(weight_bits), check_bits(act_bits)
    if backend == "x86_inductor":  # uint8 activations, int8 weights, full 8-bit ranges
        a_max = 2 ** (ab - 1) - 1 if reduce_range else 2**ab - 1
        return torch.uint8, 0, a_max, torch.int8, -(2 ** (wb - 1)), 2 ** (wb - 1) - 1
    # XNNPACK: int8 affine activations, narrow symmetric int8 weights
    return (torch.int8, -(2 ** (ab - 1)), 2 ** (ab - 1) - 1,
            torch.int8, -(2 ** (wb - 1) - 1), 2 ** (wb - 1) - 1)


def _config(
    act_ctr: Any, weight_ctr: Any, weight_bits: int, act_bits: int, backend: str, ch_axis: int | None,
    act_symmetric: bool, reduce_range: bool,
) -> QuantizationConfig:
    """Activation and weight ``QuantizationSpec`` of ``backend``; ``ch_axis=None``: per-tensor weights."""
    a_dtype, a_min, a_max, w_dtype, w_min, w_max = _specs(weight_bits, act_bits, backend, reduce_range)
    act = QuantizationSpec(
        dtype=a_dtype, quant_min=a_min, quant_max=a_max, is_dynamic=False,
        qscheme=qscheme_for(False, act_symmetric),
        observer_or_fake_quant_ctr=act_ctr,
    )
    weight = QuantizationSpec(
        dtype=w_dtype, quant_min=w_min, quant_max=w_max, ch_axis=ch_axis or 0, is_dynamic=False,
        qscheme=qscheme_for(ch_axis is not None, True),
        observer_or_fake_quant_ctr=weight_ctr,
    )
    for spec in (act, weight):
        _validate_spec(spec)
    return QuantizationConfig(act, act, weight, None, False)


def observer_from_spec(spec: QuantizationSpec) -> nn.Module:
    """The spec's observer, built as ``prepare_pt2e`` builds it (the spec's fields as arguments,
    ``ch_axis`` only for ``PerChannel`` classes)."""
    kwargs = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
              if f.name != "observer_or_fake_quant_ctr"}
    ctr: Any = spec.observer_or_fake_quant_ctr
    cls = getattr(getattr(ctr, "p", None), "func", ctr)
    if "PerChannel" not in getattr(cls, "__name__", ""):
        kwargs.pop("ch_axis", None)
    observer: nn.Module = ctr.with_args(**kwargs)()
    return observer


def _validate_spec(spec: QuantizationSpec) -> None:
    """Build the spec's observer once, so that a bad option raises at config time."""
    observer_from_spec(spec)


def get_requant_quantization_config(spec: ObserverSpec | int | None = None, *args: Any,
                                    **options: Any) -> QuantizationConfig:
    """A pt2e ``QuantizationConfig`` with REQuant observers for ``spec`` (an :class:`ObserverSpec`,
    every option documented there; ``options`` override it; the legacy positional form
    ``get_requant_quantization_config(weight_bits, act_bits)`` keeps working).

    Specs follow torchao's defaults for the backend, with ``b``-bit ranges:

    * ``"x86_inductor"`` (``X86InductorQuantizer``): activations uint8 affine
      ``0..2**b-1`` (``0..2**(b-1)-1`` with ``reduce_range``), weights int8
      ``-2**(b-1)..2**(b-1)-1`` symmetric, per channel on axis 0.
    * ``"xnnpack"`` (XNNPACK-style quantizer): activations int8 affine ``-2**(b-1)..2**(b-1)-1``,
      weights int8 narrow symmetric ``-(2**(b-1)-1)..2**(b-1)-1``.

    Both backends run symmetric weights only (oneDNN / XNNPACK kernels): ``weight_symmetric=False``
    raises ValueError instead of silently changing the scheme. QAT is not supported
    (``is_qat=True`` raises): the observers are calibration (PTQ) observers. ``eps`` defaults to
    :data:`DEFAULT_EPS`.
    """
    return _requant_config(spec_from(spec, args, options, _POSITIONAL))


def _requant_config(spec: ObserverSpec) -> QuantizationConfig:
    key = _backend(spec.backend or "x86_inductor")
    eps = DEFAULT_EPS if spec.eps is None else spec.eps
    if spec.is_qat:
        raise ValueError("REQuant observers are post-training (calibration) observers: is_qat=True "
                         "is not supported")
    if not spec.weight_symmetric:
        raise ValueError(
            f"the {key} backend runs symmetric weights only (zero point 0): weight_symmetric=False is "
            "not supported; keep weight_symmetric=True"
        )
    act_ctr = REQuantObserver.with_args(eps=eps, **spec.act_observer_args())
    wcls = PerChannelREQuantObserver if spec.per_channel else REQuantWeightObserver
    weight_ctr = wcls.with_args(eps=eps, **spec.weight_observer_args())
    return _config(act_ctr, weight_ctr, spec.weight_bits, spec.act_bits, key,
                   spec.ch_axis if spec.per_channel else None, bool(spec.act_symmetric), bool(spec.reduce_range))


def get_torchao_default_quantization_config(
    weight_bits: int = 8,
    act_bits: int = 8,
    *,
    backend: str = "x86_inductor",
    per_channel: bool = True,
    act_symmetric: bool = False,
    reduce_range: bool = False,
    eps: float = DEFAULT_EPS,
) -> QuantizationConfig:
    """torchao's default PTQ observers (``HistogramObserver`` activations, ``PerChannelMinMaxObserver``
    or ``MinMaxObserver`` weights) on exactly the specs of :func:`get_requant_quantization_config`.

    At 8 bits this equals ``get_default_x86_inductor_quantization_config()`` (x86) or
    ``get_symmetric_quantization_config(is_per_channel=...)`` (xnnpack): the baseline.
    """
    from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver

    key = _backend(backend)
    _check_eps(eps)
    act_ctr = HistogramObserver.with_args(eps=eps)
    weight_ctr = (PerChannelMinMaxObserver if per_channel else MinMaxObserver).with_args(eps=eps)
    return _config(act_ctr, weight_ctr, weight_bits, act_bits, key, 0 if per_channel else None, act_symmetric,
                   reduce_range)


_MISSING = object()


def _module_class(cls: Any) -> type | None:
    """The class of an ``nn_module_stack`` entry (a class, or its dotted name after ``.module()``)."""
    if isinstance(cls, type):
        return cls
    if not isinstance(cls, str) or "." not in cls:
        return None
    import importlib

    mod, _, name = cls.rpartition(".")
    try:
        found = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


def _split_reused_module_calls(graph: torch.fx.Graph) -> list[tuple[torch.fx.Node, Any]]:
    """Give each call of a module that runs more than once its own source partition.

    ``torch.export`` (non-strict) leaves ``source_fn_stack`` empty and torch's
    ``get_source_partitions`` then groups nodes by module *name*, so the two calls of
    torchvision's shared ``BasicBlock.relu`` form one partition with two outputs and
    ``X86InductorQuantizer`` raises "Input partition has more than one output node" (torch 2.13,
    torchao 0.18). This sets ``source_fn_stack`` of those nodes to their per-call
    ``nn_module_stack`` key (``relu``, ``relu@1``) and returns the old values to restore.
    """
    keys: dict[str, set[str]] = {}
    found: list[tuple[torch.fx.Node, str, str, type]] = []
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or node.meta.get("source_fn_stack") is not None or not stack:
            continue
        key, (fqn, cls) = list(stack.items())[-1]
        resolved = _module_class(cls)
        if resolved is not None:
            keys.setdefault(fqn, set()).add(key)
            found.append((node, key, fqn, resolved))
    changed: list[tuple[torch.fx.Node, Any]] = []
    for node, key, fqn, resolved in found:
        if len(keys[fqn]) > 1:
            changed.append((node, node.meta.get("source_fn_stack", _MISSING)))
            node.meta["source_fn_stack"] = [(key, resolved)]
    return changed


@functools.cache
def _x86_quantizer_class() -> type:
    """``X86InductorQuantizer`` annotating reused modules (a shared ``nn.ReLU``) call by call."""
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    class REQuantX86InductorQuantizer(X86InductorQuantizer):  # type: ignore[misc]
        """torchao's X86 quantizer; each call of a reused module is annotated as its own op (see
        :func:`_split_reused_module_calls`), the graph metadata is restored afterwards."""

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            changed = _split_reused_module_calls(model.graph)
            try:
                out: torch.fx.GraphModule = super().annotate(model)
            finally:
                for node, old in changed:
                    if old is _MISSING:
                        node.meta.pop("source_fn_stack", None)
                    else:
                        node.meta["source_fn_stack"] = old
            return out

    return REQuantX86InductorQuantizer


def make_quantizer(config: QuantizationConfig, backend: str = "x86_inductor") -> Quantizer:
    """A quantizer for ``backend`` with ``config`` as its global config.

    ``"x86_inductor"``: torchao's ``X86InductorQuantizer`` (a subclass that annotates each call of
    a module used twice, e.g. torchvision ResNet's shared ``relu``, as its own op: torchao's
    raises "Input partition has more than one output node" there); ``"xnnpack"``: the XNNPACK-style
    quantizer torchao ships for testing (``torchao.testing.pt2e._xnnpack_quantizer``; the
    production one lives in ExecuTorch and accepts the same config).
    """
    key = _backend(backend)
    with warnings.catch_warnings():
        # importing the X86 quantizer pulls in torch._inductor, whose import touches the deprecated
        # torch.jit.script_method; torchao marks its testing XNNPACKQuantizer as deprecated
        warnings.filterwarnings("ignore", message=".*torch.jit.script_method.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="XNNPACKQuantizer is deprecated", category=UserWarning)
        if key == "x86_inductor":
            x86: Quantizer = _x86_quantizer_class()().set_global(config)
            return x86
        from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer

        quantizer: Quantizer = XNNPACKQuantizer().set_global(config)
    return quantizer


def get_requant_quantizer(spec: ObserverSpec | int | None = None, *args: Any, weight_ranges: Any = None,
                          **options: Any) -> Quantizer:
    """``make_quantizer(get_requant_quantization_config(spec, **options), spec.backend)``.

    ``weight_ranges``: the report of :func:`requant_plugin.quantize_weights` (or
    ``{layer name: RangeEstimate}``) for the model being quantized, which must be the model that
    call returned (``fold_bn=True``): the weight observer becomes :class:`PinnedWeightObserver`
    over the reported grids (each weight is matched to the grid it lies on; the graph is annotated
    as without ``weight_ranges``), so the chosen codes (e.g. ``recipe="beyond-tensorrt"``: output
    objective, error-feedback rounding, bias correction) reach the graph unchanged. Both backends
    need symmetric grids (zero point 0); an asymmetric grid raises ValueError. Layers the report
    calibrated on inputs of another width than ``act_bits`` (``quantize_weights(..., end_bits=8,
    act_bits=4)``, or an override's ``act_bits``) read their input at that width in the graph too
    (:func:`requant_plugin.observers.layer_inputs.set_input_bits`); their weights keep their own grids.
    Each layer's input takes the range the report's ``act_bits`` simulation used (the weights were
    matched to it; :attr:`ObserverSpec.act_ranges`, ``"observed"`` to search on the graph instead).
    Below 8-bit activations (or with ``pooled_input="own"``) a layer reading pooled features reads them
    through its own observer, after the pool (:attr:`ObserverSpec.pooled_input`); with ``residual_bits``
    the operands of residual adds are quantized on their own observers at that width. Below 8-bit
    activations an observed graph output (xnnpack's Linear output: the logits) is quantized at 8 bits.
    """
    resolved = spec_from(spec, args, options, _POSITIONAL)
    backend = resolved.backend or "x86_inductor"
    config = _requant_config(resolved)
    own_bits = {n: b for n, b in getattr(weight_ranges, "act_bits", {}).items() if b != resolved.act_bits}
    settings = getattr(weight_ranges, "settings", {}) if resolved.residual_bits is not None else {}
    for option in ("act_shortcuts", "residual_correction"):
        if settings.get(option):
            warnings.warn(f"weight_ranges were calibrated with each residual shortcut read at the layer inputs' width "
                          f"(quantize_weights(..., {option}=True)), but residual_bits={resolved.residual_bits} "
                          f"gives the shortcuts their own observers: calibrate with {option}=False", stacklevel=2)
    ranges = pinned_input_ranges(weight_ranges) if resolved.act_ranges == "report" else {}
    grids = pinned_grids(weight_ranges)
    if grids:
        qmin, qmax, symmetric = grids_span(grids)
        if not symmetric:
            raise ValueError(
                f"the {_backend(backend)} backend runs symmetric weights only, the grids of weight_ranges have "
                "non-zero zero points; quantize with recipe='beyond-tensorrt' (or symmetric=True)"
            )
        weight = config.weight
        assert weight is not None
        wspec = dataclasses.replace(weight, quant_min=qmin, quant_max=qmax,
                                    observer_or_fake_quant_ctr=PinnedWeightObserver.with_args(grids=grids))
        _validate_spec(wspec)
        config = dataclasses.replace(config, weight=wspec)
    quantizer = make_quantizer(config, backend)
    pooled = resolved.act_bits if resolved.own_pooled_input else None
    residual = resolved.residual_bits
    output = 8 if resolved.act_bits < 8 else None
    if own_bits or pooled is not None or residual is not None or ranges or output is not None:
        def observer(bits: int, lo: float | None = None, hi: float | None = None) -> nn.Module:
            act = _requant_config(dataclasses.replace(resolved, act_bits=bits)).input_activation
            assert act is not None
            if lo is not None and hi is not None:
                ctr = PinnedActivationObserver.with_args(eps=eps, lo=lo, hi=hi, **resolved.act_observer_args())
                act = dataclasses.replace(act, observer_or_fake_quant_ctr=ctr)
            return observer_from_spec(act)

        eps = DEFAULT_EPS if resolved.eps is None else resolved.eps
        pinned = {n: functools.partial(observer, *r) for n, r in ranges.items()}
        set_input_bits(quantizer, own_bits, observer, pooled=pooled, residual=residual, pinned=pinned, output=output)
    return quantizer


__all__ = [
    "BACKENDS", "DEFAULT_EPS", "RELU_MEAN_RATIO", "ObserverSpec", "PerChannelREQuantObserver",
    "PinnedActivationObserver", "PinnedWeightObserver", "REQuantObserver", "REQuantWeightObserver",
    "get_requant_quantization_config", "get_requant_quantizer", "get_torchao_default_quantization_config",
    "make_quantizer", "observer_from_spec",
]
