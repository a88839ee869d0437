"""One observer/quantizer spec for both flows: what the REQuant observers of a model should do.

:class:`ObserverSpec` is the frozen, validated input of the torch.ao FX factories
(:func:`~requant_plugin.observers.fx.get_requant_qconfig`, ``get_requant_qconfig_mapping``) and
the torchao pt2e ones (``get_requant_quantization_config``, ``get_requant_quantizer``): every
field is checked once, here. A user changes a spec with ``dataclasses.replace`` or
``spec.replace(**options)``; the factories' keyword form (``get_requant_qconfig(weight_bits=4,
search="grid")``) is a thin layer over it (:func:`spec_from`), and the documented legacy spelling
``per_channel=True|False`` maps to ``granularity=PerChannel(0) | PerTensor()``. The flows add only
what depends on the backend (dtypes, ranges, which backends need symmetric weights).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..calib.sampling import DEFAULT_SAMPLE_SIZE
from ..options import Granularity, PerChannel, PerTensor, Search, Space, check_bits, granularity
from .base import RELU_MEAN_RATIO

__all__ = ["ACT_RANGES", "FX_BACKENDS", "POOLED_INPUTS", "PT2E_ALIASES", "PT2E_BACKENDS", "ObserverSpec", "spec_from"]

#: torch.ao FX backends (:mod:`.fx`) and torchao pt2e quantizers (:mod:`.pt2e`, with aliases)
FX_BACKENDS: tuple[str, ...] = ("x86", "fbgemm", "qnnpack", "onednn", "tensorrt")
PT2E_BACKENDS: tuple[str, ...] = ("x86_inductor", "xnnpack")
#: how a pt2e graph quantizes a layer's averaged (pooled) input: :attr:`ObserverSpec.pooled_input`
POOLED_INPUTS: tuple[str, ...] = ("shared", "own")
#: where a pt2e graph's layer-input ranges come from with a ``weight_ranges`` report: :attr:`ObserverSpec.act_ranges`
ACT_RANGES: tuple[str, ...] = ("report", "observed")
PT2E_ALIASES: dict[str, str] = {"x86": "x86_inductor", "inductor": "x86_inductor",
                                "x86_inductor": "x86_inductor", "xnnpack": "xnnpack"}


@dataclass(frozen=True)
class ObserverSpec:
    """REQuant observers for the FX and pt2e flows (``None`` fields take the flow's default).

    Attributes:
        weight_bits, act_bits: 2..8 bits, carried by ``quant_min``/``quant_max``.
        backend: FX: one of :data:`FX_BACKENDS` (default ``"x86"``); pt2e: one of
            :data:`PT2E_BACKENDS` or an alias (default ``"x86_inductor"``).
        granularity: weights ``PerChannel(axis)`` (one range per output channel, default) or ``PerTensor()``.
        weight_symmetric: symmetric weights (zero point 0); backends that need them refuse ``False``.
        act_symmetric: symmetric activations; ``None``: ``True`` for FX tensorrt, else ``False``.
        reduce_range: ``0..2**(b-1)-1`` activations; ``None``: torch's choice (FX x86/fbgemm at 8 bits), pt2e ``False``.
        search: ``alpha`` search of both roles: golden, grid, or minmax (``alpha = 1``: torch's min-max ranges).
        weight_search, act_search: override ``search`` for one role (``None``: ``search``).
        weight_space: search the weight range on ``w`` (uniform) or ``T(w) = sign(w)|w|^p`` (sqrt).
        p: exponent of the sqrt transform, in (0, 1].
        weight_input_mean_ratio: ``rho = E[x]**2 / Var[x]`` of the layer inputs, finite ``>= 0``; the
            weight search minimises ``(sum d**2 + rho * (sum d)**2) / n`` per channel (0: plain MSE;
            default 0.467, a ReLU of a standard normal).
        bins: activation histogram bins, ``>= 16``.
        act_sample_size: values binned per activation batch, ``>= 1024`` (``None``: every value, exact, ~30x slower).
        eps: smallest scale, finite ``> 0``; ``None``: FX torch's float32 eps, pt2e ``2**-12``.
        pooled_input: pt2e quantizers: the input of a layer reading averaged features (avg pool or
            mean, then flatten/view) is ``"shared"`` with the tensor before the pool (the backends'
            annotation, what an int8 pooling kernel needs) or re-quantized on its ``"own"`` range after it
            (:func:`~requant_plugin.observers.layer_inputs.set_input_bits`); ``None``: ``"own"`` below
            8-bit activations, ``"shared"`` at 8. FX keeps torch's shared pooling qparams.
        residual_bits: pt2e quantizers: the width of the quantized operands of residual adds
            (``aten.add`` of two tensors: the shortcut into a fused conv+add), each on its own observer;
            ``None``: ``act_bits``, shared with the tensor's other readers (the strict ``WxAy`` setting).
            Every Conv/Linear input keeps ``act_bits``. FX refuses anything but ``None``.
        act_ranges: pt2e quantizers given ``weight_ranges`` from ``quantize_weights(..., act_bits=)``: each
            layer's input takes the range the weights were calibrated against (``"report"``, default:
            :class:`~requant_plugin.observers.pinned.PinnedActivationObserverMixin`; the refinement still
            scales it) or searches its own on the graph's calibration data (``"observed"``). Other
            activations (residual operands at ``residual_bits``, shared pooling inputs) always search.
        is_qat: must stay ``False`` (the observers are post-training calibration observers).
    """

    weight_bits: int = 8
    act_bits: int = 8
    backend: str | None = None
    granularity: Granularity = field(default_factory=lambda: PerChannel(0))
    weight_symmetric: bool = True
    act_symmetric: bool | None = None
    reduce_range: bool | None = None
    search: Search = Search.GOLDEN
    weight_search: Search | None = None
    act_search: Search | None = None
    weight_space: Space = Space.UNIFORM
    p: float = 0.5
    weight_input_mean_ratio: float = RELU_MEAN_RATIO
    bins: int = 2048
    act_sample_size: int | None = DEFAULT_SAMPLE_SIZE
    eps: float | None = None
    pooled_input: str | None = None
    residual_bits: int | None = None
    act_ranges: str = "report"
    is_qat: bool = False

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "weight_bits", check_bits(self.weight_bits))
        put(self, "act_bits", check_bits(self.act_bits))
        if self.backend is not None and self.backend not in FX_BACKENDS and self.backend not in PT2E_ALIASES:
            raise ValueError(f"unknown backend {self.backend!r}: valid values are {list(FX_BACKENDS)} (FX) "
                             f"and {list(PT2E_BACKENDS)} (pt2e)")
        if not isinstance(self.granularity, (PerTensor, PerChannel)):
            raise ValueError(f"granularity must be PerTensor() or PerChannel(axis), got {self.granularity!r}")
        for name in ("search", "weight_search", "act_search"):
            value = getattr(self, name)
            if value is not None or name == "search":
                put(self, name, Search.parse(value, name))
        put(self, "weight_space", Space.parse(self.weight_space))
        if not 0.0 < float(self.p) <= 1.0:
            raise ValueError(f"the transform exponent p must be in (0, 1], got {self.p}")
        rho = float(self.weight_input_mean_ratio)
        if not (math.isfinite(rho) and rho >= 0.0):
            raise ValueError(f"weight_input_mean_ratio (input_mean_ratio) must be a finite number >= 0, got {rho}")
        if int(self.bins) < 16:
            raise ValueError(f"bins must be at least 16, got {self.bins}")
        if self.act_sample_size is not None and int(self.act_sample_size) < 1024:
            raise ValueError(f"act_sample_size: sample_size must be at least 1024 (or None to bin every value), "
                             f"got {self.act_sample_size}")
        if self.pooled_input not in (None, *POOLED_INPUTS):
            raise ValueError(f"pooled_input must be one of {list(POOLED_INPUTS)} or None (own below 8-bit "
                             f"activations), got {self.pooled_input!r}")
        if self.residual_bits is not None:
            put(self, "residual_bits", check_bits(self.residual_bits))
        if self.act_ranges not in ACT_RANGES:
            raise ValueError(f"act_ranges must be one of {list(ACT_RANGES)}, got {self.act_ranges!r}")
        if self.eps is not None and not (math.isfinite(float(self.eps)) and float(self.eps) > 0.0):
            raise ValueError(f"ObserverSpec: eps (the smallest scale) must be a finite number > 0, got {self.eps}; "
                             "leave it None for the flow's default")

    @property
    def per_channel(self) -> bool:
        """True for ``PerChannel`` weights."""
        return isinstance(self.granularity, PerChannel)

    @property
    def own_pooled_input(self) -> bool:
        """Whether a pt2e graph re-quantizes pooled layer inputs on their own range (:attr:`pooled_input`)."""
        return self.act_bits < 8 if self.pooled_input is None else self.pooled_input == "own"

    @property
    def ch_axis(self) -> int:
        """The weights' channel axis (0 per tensor)."""
        return self.granularity.axis if isinstance(self.granularity, PerChannel) else 0

    def weight_observer_args(self) -> dict[str, Any]:
        """The REQuant weight observers' own arguments: ``weight_search`` or ``search``, space, p, rho."""
        return {"search": str(self.weight_search or self.search), "space": str(self.weight_space), "p": self.p,
                "input_mean_ratio": self.weight_input_mean_ratio}

    def act_observer_args(self) -> dict[str, Any]:
        """The REQuant activation observer's own arguments: ``act_search`` or ``search``, bins, sample size."""
        return {"search": str(self.act_search or self.search), "bins": self.bins, "sample_size": self.act_sample_size}

    def replace(self, **options: Any) -> ObserverSpec:
        """A copy with ``options`` (field names, or the legacy ``per_channel``/``ch_axis``) applied."""
        if "per_channel" in options or "ch_axis" in options:
            per_channel = options.pop("per_channel", self.per_channel)
            options["granularity"] = granularity(bool(per_channel), int(options.pop("ch_axis", self.ch_axis)))
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"unexpected keyword argument {unknown[0]!r}: REQuant observer options are "
                            f"{sorted(names | {'per_channel', 'ch_axis'})}")
        return dataclasses.replace(self, **options) if options else self


def spec_from(spec: Any, args: Sequence[Any], options: Mapping[str, Any], positional: Sequence[str]) -> ObserverSpec:
    """The spec of a factory call ``f(spec=None, *args, **options)``: a spec (or ``None``) updated by
    ``options``, or, when the first argument is not a spec, the legacy positional form whose
    arguments are named by ``positional`` (``get_requant_qconfig(4, 8, "x86", False)``)."""
    if spec is not None and not isinstance(spec, ObserverSpec):
        args, spec = (spec, *args), None
    if len(args) > len(positional):
        raise TypeError(f"at most {len(positional)} positional arguments ({', '.join(positional)}), got {len(args)}")
    opts = dict(options)
    for name, value in zip(positional, args, strict=False):
        if name in opts:
            raise TypeError(f"got multiple values for argument {name!r}")
        opts[name] = value
    return (spec if spec is not None else ObserverSpec()).replace(**opts)
