"""``ExportConfig``: every setting of the TensorRT Q/DQ export, validated once, as plain data.

A config is frozen; change one with ``dataclasses.replace`` or by passing field names to
:func:`~.onnx_qdq.export_onnx_qdq` (``weight_bits=4``), which always win over the config.
:func:`export_config` is that one translation: it also reads the legacy ``per_channel=`` bool
and the four settings TensorRT fixes (:data:`TENSORRT_FIXED`), which accept only their one
value and otherwise raise a ``ValueError`` saying why TensorRT cannot express the request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

from ..options import Granularity, PerChannel, PerTensor, Search, Space, check_bits
from ..ptq.config import OVERRIDE_KEYS, LayerOverride, layer_space, translate_legacy

__all__ = [
    "DEFAULT_EXPORT",
    "EXPORT_OVERRIDE_KEYS",
    "FP16_MIN_OPSET",
    "MAX_OPSET",
    "MIN_OPSET",
    "TENSORRT_FIXED",
    "ExportConfig",
    "export_config",
]

MIN_OPSET, MAX_OPSET, FP16_MIN_OPSET = 13, 20, 19

#: Per-layer override keys the export applies: a subset of the shared
#: :data:`requant_plugin.ptq.config.OVERRIDE_KEYS` of :class:`~requant_plugin.ptq.config.LayerOverride`.
EXPORT_OVERRIDE_KEYS = frozenset({"bits", "space", "skip"})

#: The other shared override keys, and why the export refuses them per layer.
_NOT_PER_LAYER = {
    "symmetric": "TensorRT quantizes symmetrically only (every zero point is 0)",
    "granularity": "the export sets the weight granularity for every layer (granularity=/per_channel=)",
    "per_channel": "the export sets the weight granularity for every layer (granularity=/per_channel=)",
    "p": "the export uses one transform exponent for every layer (p=)",
    "act_bits": "the export quantizes every activation at act_bits= (TensorRT INT8: 8)",
}

#: Settings TensorRT allows one value of: ``option: (the value, why no other)``; the options are
#: compared the way the former keywords were (truthiness for the flags, equality for ``dtype``).
TENSORRT_FIXED: dict[str, tuple[Any, str]] = {
    "symmetric": (True, "asymmetric weights cannot go to TensorRT: it supports symmetric quantization "
                        "only (every zero point must be 0); use symmetric=True, act_symmetric=True"),
    "act_symmetric": (True, "asymmetric activations cannot go to TensorRT: it supports symmetric "
                            "quantization only (every zero point must be 0); use symmetric=True, "
                            "act_symmetric=True"),
    "dtype": ("int8", "dtype={value!r} is not supported: TensorRT INT8 Q/DQ needs signed int8 with zero "
                      "point 0 (uint8 is treated as int8 with a warning and breaks the ranges); use dtype='int8'"),
    "act_per_channel": (False, "per-channel activations are not supported by TensorRT (only constant "
                               "weights may be per channel); use act_per_channel=False"),
}


def _check_fixed(key: str, value: Any) -> None:
    """Raise the :data:`TENSORRT_FIXED` reason unless ``value`` is the one TensorRT allows."""
    only, why = TENSORRT_FIXED[key]
    ok = value == only if isinstance(only, str) else bool(value) == only
    if not ok:
        raise ValueError(why.format(value=value))


def _check_override(name: str, ov: Mapping[str, Any] | LayerOverride) -> dict[str, Any]:
    """One ``overrides`` entry: a mapping (or :class:`LayerOverride`) using the shared keys, of which
    the export applies ``bits``, ``space`` and ``skip``. Returns the mapping as given (a copy)."""
    if isinstance(ov, LayerOverride):
        ov = {f.name: v for f in dataclasses.fields(ov) if (v := getattr(ov, f.name)) not in (None, False)}
    if not isinstance(ov, Mapping):
        raise TypeError(f"overrides[{name!r}] must be a mapping such as {{'bits': 4}}, got {ov!r}")
    bad = set(ov) - OVERRIDE_KEYS
    if bad:
        raise ValueError(
            f"overrides[{name!r}] has unknown keys {sorted(bad)}; valid: {sorted(EXPORT_OVERRIDE_KEYS)}"
        )
    refused = sorted(set(ov) - EXPORT_OVERRIDE_KEYS)
    if refused:
        why = "; ".join(f"{k!r}: {_NOT_PER_LAYER[k]}" for k in refused)
        raise ValueError(
            f"overrides[{name!r}] has keys the export cannot apply per layer ({why}); "
            f"valid: {sorted(EXPORT_OVERRIDE_KEYS)}"
        )
    LayerOverride.from_mapping(name, ov)  # the shared value checks (bits 2..8, a known space)
    return dict(ov)


@dataclass(frozen=True)
class ExportConfig:
    """How :func:`~.onnx_qdq.export_onnx_qdq` quantizes a model for TensorRT.

    Weights: ``scale = alpha * amax / (2**(b-1) - 1)``, int8 codes in ``[-2**(b-1), 2**(b-1) - 1]``,
    zero point 0; activations: ``scale = alpha * amax / 127`` per tensor from calibration.

    Attributes:
        weight_bits: ``b`` in 2..8 (codes use a sub-range of int8 below 8 bits).
        act_bits: must be 8 (a QuantizeLinear clamps to ``[-128, 127]``).
        space: ``"uniform"``, or ``"sqrt"``: ``T(w) = sign(w)|w|**p`` levels snapped to int8.
        granularity: ``PerChannel()`` (one weight scale per output channel; the axis is each
            op's own: 0 Conv/Gemm, 1 ConvTranspose) or ``PerTensor()``; legacy ``per_channel``.
        p: the transform exponent of ``space="sqrt"``, in (0, 1] (checked by the sqrt layers).
        search: how ``alpha`` is found (``"golden"``, ``"grid"``, ``"minmax"``).
        transform_first_last: ``False`` keeps the first and last weighted layers uniform.
        overrides: ``{layer: {"bits": b, "space": s, "skip": bool}}`` per layer.
        exclude: layer or ONNX node names of weighted ops left in float.
        weight_ranges: given weight grids kept instead of searched (a ``quantize_weights``
            report or ``{layer: RangeEstimate}``); not with ``fp16``.
        opset: ONNX opset in 13..20 (per-channel Q/DQ needs 13, TensorRT 10 parses up to 20).
        fp16: float16 for the unquantized layers (float16 scales need opset >= 19).
        bins: histogram bins per activation tensor during calibration (>= 16).
        progress: a tqdm bar during calibration.
        strict: raise (writing nothing) when the TensorRT rules check finds an error.
    """

    weight_bits: int = 8
    act_bits: int = 8
    space: Space = Space.UNIFORM
    granularity: Granularity = field(default_factory=PerChannel)
    p: float = 0.5
    search: Search = Search.GOLDEN
    transform_first_last: bool = False
    overrides: Mapping[str, Mapping[str, Any] | LayerOverride] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    weight_ranges: Any = None
    opset: int = 17
    fp16: bool = False
    bins: int = 2048
    progress: bool = False
    strict: bool = True

    def __post_init__(self) -> None:
        check_bits(self.weight_bits)
        object.__setattr__(self, "space", Space.parse(self.space))
        object.__setattr__(self, "search", Search.parse(self.search))
        if self.act_bits != 8:
            raise ValueError(
                f"act_bits={self.act_bits}: TensorRT activations are INT8 (a QuantizeLinear clamps to "
                "[-128, 127]); lower activation bit widths cannot be expressed, use act_bits=8"
            )
        opset = self.opset
        if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
            raise ValueError(
                f"opset={opset!r} is not supported: per-channel Q/DQ needs opset >= {MIN_OPSET} and "
                f"TensorRT 10 parses up to {MAX_OPSET}; use {MIN_OPSET}..{MAX_OPSET} (17 recommended)"
            )
        if self.fp16 and opset < FP16_MIN_OPSET:
            raise ValueError(
                f"fp16=True needs opset >= {FP16_MIN_OPSET} (float16 Q/DQ scales); got opset={opset}"
            )
        if not isinstance(self.granularity, (PerTensor, PerChannel)):
            raise ValueError(
                f"granularity must be PerTensor() or PerChannel(), got {self.granularity!r}"
            )
        if isinstance(self.granularity, PerChannel) and self.granularity.axis != 0:
            raise ValueError(
                f"granularity={self.granularity!r}: the export takes each op's own output-channel "
                "axis (0 Conv/Gemm, 1 ConvTranspose); use PerChannel()"
            )
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 16:
            raise ValueError(f"bins must be an integer of at least 16, got {self.bins!r} (2048 recommended)")
        exclude = self.exclude
        if isinstance(exclude, str):
            raise TypeError(
                f"exclude must be a list of layer names, got the string {exclude!r}; use exclude=[{exclude!r}]"
            )
        object.__setattr__(self, "exclude", tuple(exclude or ()))
        overrides = {str(k): _check_override(str(k), v) for k, v in dict(self.overrides or {}).items()}
        object.__setattr__(self, "overrides", MappingProxyType(overrides))

    @property
    def per_channel(self) -> bool:
        """True for per-channel weight scales (the legacy spelling of ``granularity``)."""
        return isinstance(self.granularity, PerChannel)

    @property
    def skipped(self) -> set[str]:
        """Layers that ``overrides`` marks ``skip`` (left in float like ``exclude``)."""
        return {k for k in self.overrides if self.layer_override(k).skip}

    def layer_override(self, layer: str) -> LayerOverride:
        """The parsed override of ``layer`` (all ``None``: the config's settings)."""
        return LayerOverride.from_mapping(layer, self.overrides.get(layer, {}))

    def layer_bits_space(self, layer: str, ends: frozenset[str]) -> tuple[int, Space]:
        """``(bits, space)`` of ``layer``: its override, else the config; the first and last
        weighted layers (``ends``, :func:`~requant_plugin.ptq.config.first_last`) stay uniform
        unless ``transform_first_last`` or the layer overrides its space (the shared rule)."""
        ov = self.layer_override(layer)
        bits = self.weight_bits if ov.bits is None else ov.bits
        space = layer_space(layer, self.space if ov.space is None else ov.space, ends,
                            transform_first_last=self.transform_first_last,
                            space_overridden=ov.space is not None)
        return bits, Space.parse(space)

    def override_settings(self) -> dict[str, dict[str, Any]]:
        """``overrides`` as the caller wrote them, as plain dicts (recorded in the settings)."""
        return {k: dict(cast(Mapping[str, Any], v)) for k, v in self.overrides.items()}

    def settings(self) -> dict[str, Any]:
        """The settings recorded in the ONNX metadata and the report (JSON-ready), except the
        graph-dependent ones (``fold_bn``, ``overrides``, ``exclude``, ``weight_ranges``)."""
        return dict(
            weight_bits=self.weight_bits,
            act_bits=self.act_bits,
            space=str(self.space),
            per_channel=self.per_channel,
            p=self.p,
            search=str(self.search),
            transform_first_last=self.transform_first_last,
        )


DEFAULT_EXPORT = ExportConfig()


def export_config(config: ExportConfig | None = None, **options: Any) -> ExportConfig:
    """``config`` (default :data:`DEFAULT_EXPORT`) with ``options`` applied; options always win.

    ``options`` are :class:`ExportConfig` field names, plus ``per_channel`` (bool, for
    ``granularity``) and the :data:`TENSORRT_FIXED` settings, accepted only at their one value.
    """
    base = DEFAULT_EXPORT if config is None else config
    if not isinstance(base, ExportConfig):
        raise TypeError(f"config must be an ExportConfig, got {type(base).__name__}")
    fields = {f.name for f in dataclasses.fields(ExportConfig)}
    unknown = sorted(set(options) - fields - set(TENSORRT_FIXED) - {"per_channel"})
    if unknown:
        raise TypeError(
            f"export_onnx_qdq() got unknown options {unknown}; valid: {sorted(fields | {'per_channel'})}"
        )
    fixed = {k: options.pop(k) for k in list(options) if k in TENSORRT_FIXED}
    options = translate_legacy(options, "export_onnx_qdq")
    out = dataclasses.replace(base, **options) if options else base
    for key in TENSORRT_FIXED:  # in the order the former keywords were checked
        if key in fixed:
            _check_fixed(key, fixed[key])
    return out
