"""Ready torch.ao ``QConfig`` / ``QConfigMapping`` objects with REQuant observers.

``get_requant_qconfig_mapping(backend="x86")`` mirrors ``get_default_qconfig_mapping("x86")``
with torch's ``HistogramObserver`` and ``(PerChannel)MinMaxObserver`` replaced by
:class:`~requant_plugin.observers.REQuantObserver` and
:class:`~requant_plugin.observers.PerChannelREQuantObserver` /
:class:`~requant_plugin.observers.REQuantWeightObserver`; the fixed-qparams and reuse-input
entries (sigmoid, tanh, reshape, ...) are kept.

Dtypes and ranges per backend (``b`` = bits):

============  ===========================================  ==========================================
backend       activations (per tensor)                     weights
============  ===========================================  ==========================================
x86, fbgemm   quint8 affine, ``0..127`` at 8 bits          qint8, ``-2**(b-1)..2**(b-1)-1``,
              (torch's reduce-range default, no VNNI        symmetric (affine allowed)
              overflow), ``0..2**b-1`` below 8 bits
qnnpack       quint8 affine ``0..2**b-1``                  qint8 ``-2**(b-1)..2**(b-1)-1``
onednn        quint8 affine ``0..2**b-1`` (*)              qint8 symmetric only
tensorrt      qint8 symmetric ``-(2**(b-1)-1)..2**(b-1)-1``  qint8 symmetric, same narrow range
              (zero point 0, scale ``amax / 127``)
============  ===========================================  ==========================================

(*) The same on every CPU. torch's own onednn default warns on CPUs without VNNI (possible
``vpmaddubsw`` overflow with 0..255 activations); that warning is about torch's observer, which
this mapping replaces, so it is not emitted here. On such CPUs pass ``reduce_range=True``
(0..127 activations) if the int8 kernels lose accuracy.

Every option is validated once, in :class:`~requant_plugin.observers.spec.ObserverSpec`, when the
config is built (and each observer is constructed once), not later in ``prepare_fx``/``convert_fx``.

Sub-8-bit ranges are carried by ``quant_min``/``quant_max``. The *lowered* FX graph
(``convert_fx`` on x86/fbgemm/qnnpack/onednn) clamps to the 8-bit container, so evaluate
sub-8-bit models with the decomposed reference graph or with :mod:`requant_plugin.pt2e`.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.ao.quantization import QConfig, QConfigMapping, get_default_qconfig_mapping

from ..options import check_bits
from .ao import PerChannelREQuantObserver, PinnedWeightObserver, REQuantObserver, REQuantWeightObserver
from .base import qscheme_for
from .pinned import grids_span, pinned_grids
from .spec import FX_BACKENDS, ObserverSpec, spec_from

__all__ = [
    "BACKENDS", "SYMMETRIC_WEIGHT_BACKENDS", "activation_range", "get_requant_qconfig", "get_requant_qconfig_mapping",
    "weight_range",
]

BACKENDS: tuple[str, ...] = FX_BACKENDS
#: backends whose kernels need symmetric (zero point 0) weights
SYMMETRIC_WEIGHT_BACKENDS: tuple[str, ...] = ("onednn", "tensorrt")
#: the legacy positional order of the FX factories
_POSITIONAL = ("weight_bits", "act_bits", "backend", "per_channel")


def activation_range(act_bits: int, backend: str, symmetric: bool, reduce_range: bool | None
                     ) -> tuple[torch.dtype, int, int]:
    """``(dtype, quant_min, quant_max)`` of the activations for ``backend``."""
    b = check_bits(act_bits)
    if backend == "tensorrt":
        return torch.qint8, -(2 ** (b - 1) - 1), 2 ** (b - 1) - 1
    if reduce_range is None:
        reduce_range = backend in ("x86", "fbgemm") and b == 8
    top = 2**b - 1
    if reduce_range:
        top = 2 ** (b - 1) - 1
    if symmetric and top < 2:
        raise ValueError(f"act_bits={b} leaves too few levels for symmetric activations")
    return torch.quint8, 0, top


def weight_range(weight_bits: int, backend: str) -> tuple[torch.dtype, int, int]:
    """``(dtype, quant_min, quant_max)`` of the weights for ``backend``."""
    b = check_bits(weight_bits)
    half = 2 ** (b - 1)
    if backend == "tensorrt":
        return torch.qint8, -(half - 1), half - 1
    return torch.qint8, -half, half - 1


def _fx_backend(spec: ObserverSpec) -> tuple[str, bool]:
    """The spec's FX backend and activation symmetry, after the backend's own rules."""
    backend = spec.backend or "x86"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: valid values are {list(BACKENDS)}")
    if spec.is_qat:
        raise ValueError("REQuant observers are post-training (calibration) observers: is_qat=True "
                         "is not supported")
    if spec.pooled_input == "own":
        raise ValueError("pooled_input='own' is a pt2e option (get_requant_quantizer); the FX mappings keep "
                         "torch's shared pooling qparams: leave pooled_input None or 'shared'")
    if spec.residual_bits is not None:
        raise ValueError(f"residual_bits={spec.residual_bits} is a pt2e option (get_requant_quantizer); the FX "
                         "mappings quantize every activation at act_bits: leave residual_bits None")
    if not spec.weight_symmetric and backend in SYMMETRIC_WEIGHT_BACKENDS:
        raise ValueError(
            f"backend {backend!r} only runs symmetric weights (zero point 0): weight_symmetric=False "
            "is not supported there; use weight_symmetric=True or the x86/fbgemm backend"
        )
    act_symmetric = backend == "tensorrt" if spec.act_symmetric is None else spec.act_symmetric
    if backend == "tensorrt" and not act_symmetric:
        raise ValueError("TensorRT needs symmetric activations (zero point 0): act_symmetric=False "
                         "is not supported for backend='tensorrt'")
    return backend, act_symmetric


def _qconfig(spec: ObserverSpec) -> QConfig:
    backend, act_symmetric = _fx_backend(spec)
    a_dtype, a_min, a_max = activation_range(spec.act_bits, backend, act_symmetric, spec.reduce_range)
    w_dtype, w_min, w_max = weight_range(spec.weight_bits, backend)
    extra: dict[str, Any] = {} if spec.eps is None else {"eps": spec.eps}
    activation = REQuantObserver.with_args(
        dtype=a_dtype, quant_min=a_min, quant_max=a_max, **spec.act_observer_args(),
        qscheme=qscheme_for(False, act_symmetric), **extra,
    )
    wargs = dict(dtype=w_dtype, quant_min=w_min, quant_max=w_max, **spec.weight_observer_args(),
                 qscheme=qscheme_for(spec.per_channel, spec.weight_symmetric), **extra)
    if spec.per_channel:
        weight = PerChannelREQuantObserver.with_args(ch_axis=spec.ch_axis, **wargs)
    else:
        weight = REQuantWeightObserver.with_args(**wargs)
    # with_args defers construction to prepare_fx/convert_fx: build each observer once now so that a bad
    # option raises here, not in the middle of a flow
    activation()
    weight()
    return QConfig(activation=activation, weight=weight)


def get_requant_qconfig(spec: ObserverSpec | int | None = None, *args: Any, **options: Any) -> QConfig:
    """A ``QConfig`` with REQuant activation and weight observers for ``spec.backend``.

    ``spec``: an :class:`ObserverSpec` (every option documented there); ``options`` (its field
    names, or the legacy ``per_channel=``) override it. The legacy positional form
    ``get_requant_qconfig(weight_bits, act_bits, backend, per_channel)`` keeps working. FX
    specifics: ``backend`` is one of :data:`BACKENDS`; ``weight_symmetric=False`` raises on the
    backends that need symmetric weights (onednn, tensorrt); tensorrt needs symmetric activations.
    """
    return _qconfig(spec_from(spec, args, options, _POSITIONAL))


def _one_input_width(weight_ranges: Any, act_bits: int) -> None:
    """Refuse a report whose layers were calibrated on inputs of different widths (FX has one)."""
    widths = getattr(weight_ranges, "act_bits", None) or {}
    if len(set(widths.values())) > 1:
        own = sorted(n for n, b in widths.items() if b != act_bits)
        raise ValueError(
            f"weight_ranges calibrated {own} on inputs of their own width (end_bits or an override's act_bits), "
            f"the mapping quantizes every input at act_bits={act_bits}: per-layer input widths reach the graph in "
            "the pt2e flow only (get_requant_quantizer(weight_ranges=report)); for FX quantize without end_bits "
            "and act_bits overrides"
        )


def _pin_weights(mapping: QConfigMapping, weight_ranges: Any, backend: str) -> None:
    """Every REQuant weight observer of ``mapping`` becomes a :class:`PinnedWeightObserver` over the
    grids of ``weight_ranges`` (the observer finds the grid its weight lies on)."""
    grids = pinned_grids(weight_ranges)
    if not grids:
        return
    qmin, qmax, symmetric = grids_span(grids)
    if backend in SYMMETRIC_WEIGHT_BACKENDS and not symmetric:
        raise ValueError(
            f"backend {backend!r} runs symmetric weights only (zero point 0), the grids of weight_ranges have "
            "zero points; quantize with symmetric=True (recipe='beyond-tensorrt') or use x86/fbgemm"
        )
    per_channel = any(len(g["scale"]) > 1 for g in grids)
    pinned = PinnedWeightObserver.with_args(
        grids=grids, dtype=torch.qint8, qscheme=qscheme_for(per_channel, symmetric), quant_min=qmin, quant_max=qmax)
    pinned()  # validate the grids now (see get_requant_qconfig)
    # torch runs transposed convolutions with per-tensor weights only (its mapping's per-tensor
    # entries): per-channel grids stay unpinned there, those layers get a per-tensor REQuant range
    ours = (PerChannelREQuantObserver,) if per_channel else (PerChannelREQuantObserver, REQuantWeightObserver)
    transposed = [g["layer"] for g in grids if len(g["scale"]) > 1 and g["ch_axis"] != 0]
    if transposed:
        warnings.warn(
            f"torch.ao FX runs transposed convolutions with per-tensor weights only: {transposed[:4]} keep their "
            "float weights' REQuant per-tensor range instead of their per-channel grid (the pt2e flow, "
            "get_requant_quantizer(weight_ranges=...), keeps the grid; or quantize them with "
            "overrides={layer: {'per_channel': False}})", UserWarning, stacklevel=3)
    unpinned = mapping.global_qconfig
    if unpinned is not None:
        mapping.set_global(QConfig(activation=unpinned.activation, weight=pinned))
    for key, qc in list(mapping.object_type_qconfigs.items()):
        if qc is not None and _observer_class(qc.weight) in ours:
            mapping.set_object_type(key, QConfig(activation=qc.activation, weight=pinned))


def _observer_class(ctr: Any) -> Any:
    """The observer class behind a constructor (``with_args`` partial or a bare class)."""
    inner = getattr(ctr, "p", None)
    return getattr(inner, "func", ctr)


#: torch's warning about *its own* onednn activation observer (``HistogramObserver`` 0..255) on CPUs
#: without VNNI; the mapping below replaces that observer, so the warning is not about its result.
_ONEDNN_VNNI_WARNING = r"Default qconfig of oneDNN backend with reduce_range of false may have accuracy issues"


def _torch_default_mapping(backend: str) -> QConfigMapping:
    """``get_default_qconfig_mapping(backend)`` without torch's CPU-dependent onednn VNNI warning.

    The mapping is only read for its entries (the special ops and which observers to replace),
    and its onednn activation observer is replaced by REQuant's, so the warning (emitted when
    ``torch.cpu._is_vnni_supported()`` is false) would make the result depend on the CPU. The
    REQuant onednn mapping keeps 0..255 activations on every CPU (see the module docstring).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_ONEDNN_VNNI_WARNING, category=UserWarning)
        return get_default_qconfig_mapping(backend)


def get_requant_qconfig_mapping(spec: ObserverSpec | int | None = None, *args: Any, weight_ranges: Any = None,
                                **options: Any) -> QConfigMapping:
    """``get_default_qconfig_mapping(backend)`` with REQuant observers (see :func:`get_requant_qconfig`).

    Every entry that uses torch's ``HistogramObserver`` gets the REQuant activation observer,
    and its min-max weight observer the REQuant weight observer (per-tensor for the
    transposed convolutions, as torch does); fixed-qparams entries (sigmoid, tanh, softmax,
    hardsigmoid) and ``reshape``'s reuse-input entry are kept unchanged. ``tensorrt`` gets a
    global-only mapping.

    ``weight_ranges``: the report of :func:`requant_plugin.quantize_weights` (or
    ``{layer name: RangeEstimate}``) for the model being prepared, which must be the model that
    call returned (``fold_bn=True``, uniform grids, e.g. ``recipe="beyond"``): each reported
    weight observer becomes :class:`~requant_plugin.observers.PinnedWeightObserver` over the
    reported grids (each weight is matched to the grid it lies on), so the chosen codes reach the
    converted int8 modules unchanged and the graph is annotated as without ``weight_ranges``.
    Backends that need symmetric weights (onednn, tensorrt) refuse grids with zero points.
    """
    resolved = spec_from(spec, args, options, _POSITIONAL)
    _one_input_width(weight_ranges, resolved.act_bits)
    backend = resolved.backend or "x86"
    qconfig = _qconfig(resolved)
    mapping = QConfigMapping().set_global(qconfig)
    if backend == "tensorrt":
        _pin_weights(mapping, weight_ranges, backend)
        return mapping
    per_tensor = _qconfig(resolved.replace(per_channel=False))
    default = _torch_default_mapping(backend)
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

    for key, qc in default.object_type_qconfigs.items():
        if qc is None or _observer_class(qc.activation) is not HistogramObserver:
            mapping.set_object_type(key, qc)
            continue
        wcls = _observer_class(qc.weight)
        if wcls is MinMaxObserver:  # transposed convs / PReLU: per-tensor weights in torch
            mapping.set_object_type(key, per_tensor)
        elif isinstance(wcls, type) and "MinMax" in wcls.__name__:
            mapping.set_object_type(key, qconfig)
        else:  # e.g. layer_norm: keep torch's weight placeholder
            mapping.set_object_type(key, QConfig(activation=qconfig.activation, weight=qc.weight))
    _pin_weights(mapping, weight_ranges, backend)
    return mapping
