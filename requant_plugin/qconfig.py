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

Every option is validated when the config is built (each observer is constructed once), not
later in ``prepare_fx``/``convert_fx``.

Sub-8-bit ranges are carried by ``quant_min``/``quant_max``. The *lowered* FX graph
(``convert_fx`` on x86/fbgemm/qnnpack/onednn) clamps to the 8-bit container, so evaluate
sub-8-bit models with the decomposed reference graph or with :mod:`requant_plugin.pt2e`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch.ao.quantization import QConfig, QConfigMapping, get_default_qconfig_mapping

from ._activation_observer import DEFAULT_SAMPLE_SIZE
from ._observer_base import RELU_MEAN_RATIO, SEARCH_CHOICES, Search, WeightSpace
from .core import check_bits
from .observers import PerChannelREQuantObserver, REQuantObserver, REQuantWeightObserver

BACKENDS: tuple[str, ...] = ("x86", "fbgemm", "qnnpack", "onednn", "tensorrt")
#: backends whose kernels need symmetric (zero point 0) weights
SYMMETRIC_WEIGHT_BACKENDS: tuple[str, ...] = ("onednn", "tensorrt")


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: valid values are {list(BACKENDS)}")
    return backend


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


def get_requant_qconfig(
    weight_bits: int = 8,
    act_bits: int = 8,
    backend: str = "x86",
    per_channel: bool = True,
    *,
    weight_symmetric: bool = True,
    act_symmetric: bool | None = None,
    reduce_range: bool | None = None,
    search: Search = "golden",
    weight_search: Search | None = None,
    act_search: Search | None = None,
    weight_space: WeightSpace = "uniform",
    p: float = 0.5,
    weight_input_mean_ratio: float = RELU_MEAN_RATIO,
    bins: int = 2048,
    act_sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    eps: float | None = None,
) -> QConfig:
    """A ``QConfig`` with REQuant activation and weight observers for ``backend``.

    Args:
        weight_bits, act_bits: 2..8 bits, carried by ``quant_min``/``quant_max``.
        backend: one of :data:`BACKENDS` (sets dtypes and ranges, see the module docstring).
        per_channel: per-channel weights (``ch_axis=0``) or one range per tensor.
        weight_symmetric: symmetric weights (zero point 0). ``False`` raises ValueError on the
            backends that need symmetric weights (onednn, tensorrt).
        act_symmetric: symmetric activations; default ``True`` for tensorrt, else ``False``
            (tensorrt rejects ``False``).
        reduce_range: x86/fbgemm 8-bit activations use ``0..127`` (avoids the ``vpmaddubsw``
            overflow without VNNI); ``False`` gives ``0..255``. Default: torch's choice.
        search: ``"golden"``, ``"grid"`` or ``"minmax"`` (alpha = 1, torch's min-max ranges).
        weight_search, act_search: override ``search`` for the weights / the activations
            (e.g. ``weight_search="minmax"``: REQuant activations with torch's min-max weights).
        weight_space: ``"uniform"`` or ``"sqrt"`` (weights only; see the observers).
        p: exponent of the ``"sqrt"`` weight transform.
        weight_input_mean_ratio: ``rho = E[x]**2 / Var[x]`` of the layer inputs for the weight
            search: the weight observers minimise ``(sum d**2 + rho * (sum d)**2) / n`` per
            channel (``d`` = weight errors), the output error of inputs with that mean/spread
            ratio. Default: a ReLU of a standard normal (0.467), right for post-ReLU CNN layers;
            ``0`` is REQuant's plain weight MSE (see docs/observers-results.md for both).
        act_sample_size: values the activation observers bin per batch (default 4096, the rest
            represented by a weighted subsample with exact tails); ``None`` bins every value:
            exact histograms, about 30x slower per batch (see :class:`REQuantObserver`).
        eps: smallest scale (default: torch's float32 eps; tensorrt/qnnpack-style
            deployments may want ``2**-12``).
    """
    _check_backend(backend)
    if eps is not None and not (math.isfinite(float(eps)) and float(eps) > 0.0):
        raise ValueError(f"get_requant_qconfig: eps (the smallest scale) must be a finite number > 0, got {eps}")
    w_search = search if weight_search is None else weight_search
    a_search = search if act_search is None else act_search
    for name, value in (("search", search), ("weight_search", w_search), ("act_search", a_search)):
        if value not in SEARCH_CHOICES:
            raise ValueError(f"unknown {name} {value!r}: valid values are {list(SEARCH_CHOICES)}")
    if not weight_symmetric and backend in SYMMETRIC_WEIGHT_BACKENDS:
        raise ValueError(
            f"backend {backend!r} only runs symmetric weights (zero point 0): weight_symmetric=False "
            "is not supported there; use weight_symmetric=True or the x86/fbgemm backend"
        )
    if act_symmetric is None:
        act_symmetric = backend == "tensorrt"
    if backend == "tensorrt" and not act_symmetric:
        raise ValueError("TensorRT needs symmetric activations (zero point 0): act_symmetric=False "
                         "is not supported for backend='tensorrt'")
    a_dtype, a_min, a_max = activation_range(act_bits, backend, act_symmetric, reduce_range)
    w_dtype, w_min, w_max = weight_range(weight_bits, backend)
    extra: dict[str, Any] = {} if eps is None else {"eps": eps}
    activation = REQuantObserver.with_args(
        dtype=a_dtype, quant_min=a_min, quant_max=a_max, search=a_search, bins=bins, sample_size=act_sample_size,
        qscheme=torch.per_tensor_symmetric if act_symmetric else torch.per_tensor_affine, **extra,
    )
    if per_channel:
        weight = PerChannelREQuantObserver.with_args(
            dtype=w_dtype, quant_min=w_min, quant_max=w_max, ch_axis=0, search=w_search,
            space=weight_space, p=p, input_mean_ratio=weight_input_mean_ratio,
            qscheme=torch.per_channel_symmetric if weight_symmetric else torch.per_channel_affine, **extra,
        )
    else:
        weight = REQuantWeightObserver.with_args(
            dtype=w_dtype, quant_min=w_min, quant_max=w_max, search=w_search, space=weight_space, p=p,
            input_mean_ratio=weight_input_mean_ratio,
            qscheme=torch.per_tensor_symmetric if weight_symmetric else torch.per_tensor_affine, **extra,
        )
    # with_args defers construction to prepare_fx/convert_fx: build each observer once now so that a bad
    # option (weight_space="log", p=0, bins=1, ...) raises here, not in the middle of a flow
    activation()
    weight()
    return QConfig(activation=activation, weight=weight)


def _pin_weights(mapping: QConfigMapping, weight_ranges: Any, backend: str) -> None:
    """Every REQuant weight observer of ``mapping`` becomes a :class:`PinnedWeightObserver` over the
    grids of ``weight_ranges`` (the observer finds the grid its weight lies on)."""
    from ._pinned_observer import grids_span, pinned_grids
    from .observers import PinnedWeightObserver

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
    qscheme = {(True, True): torch.per_channel_symmetric, (True, False): torch.per_channel_affine,
               (False, True): torch.per_tensor_symmetric, (False, False): torch.per_tensor_affine}[
        (per_channel, symmetric)]
    pinned = PinnedWeightObserver.with_args(
        grids=grids, dtype=torch.qint8, qscheme=qscheme, quant_min=qmin, quant_max=qmax)
    pinned()  # validate the grids now (see get_requant_qconfig)
    ours = (PerChannelREQuantObserver, REQuantWeightObserver)
    if mapping.global_qconfig is not None:
        mapping.set_global(QConfig(activation=mapping.global_qconfig.activation, weight=pinned))
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


def get_requant_qconfig_mapping(
    weight_bits: int = 8,
    act_bits: int = 8,
    backend: str = "x86",
    per_channel: bool = True,
    **kwargs: Any,
) -> QConfigMapping:
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
    weight_ranges = kwargs.pop("weight_ranges", None)
    qconfig = get_requant_qconfig(weight_bits, act_bits, backend, per_channel, **kwargs)
    mapping = QConfigMapping().set_global(qconfig)
    if backend == "tensorrt":
        _pin_weights(mapping, weight_ranges, backend)
        return mapping
    per_tensor = get_requant_qconfig(weight_bits, act_bits, backend, False, **kwargs)
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


__all__ = [
    "BACKENDS", "SYMMETRIC_WEIGHT_BACKENDS", "activation_range", "get_requant_qconfig",
    "get_requant_qconfig_mapping", "weight_range",
]
