"""``QuantizeConfig``: every setting of :func:`~requant_plugin.quantize_weights`, frozen and validated.

A config is plain data: build one, or start from a named recipe (:data:`requant_plugin.ptq.recipes.RECIPES`) and
change fields with ``dataclasses.replace``. Strings are accepted wherever an option enum is expected (``space="sqrt"``)
and normalised to the members of :mod:`requant_plugin.options`; the legacy ``per_channel=`` keyword is translated to
``granularity`` by :func:`translate_legacy`, the one place that knows it. The paper's rule that the first and last
weighted layers keep the uniform grid is declared here once (:func:`first_last`, :func:`layer_space`).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.target import TARGET_DAMP
from ..options import (
    BiasCorrection,
    Convention,
    Granularity,
    Inputs,
    LossSpace,
    Objective,
    PerChannel,
    PerTensor,
    Rounding,
    Search,
    Space,
    check_bits,
    granularity,
)

__all__ = [
    "AUTO_GRAM_COST", "AUTO_ROWS", "AUTO_ROWS_2BIT", "OVERRIDE_KEYS", "LayerOverride", "QuantizeConfig", "check_p",
    "check_sweeps", "check_target_damp", "first_last", "layer_space", "translate_legacy",
]

#: ``calibration_rows="auto"`` at 3 bits and more: the fewest im2col rows a layer's Gram matrices get
AUTO_ROWS = 8192
#: ``calibration_rows="auto"``: every layer's rows at 2 bits (dev split, 4 seeds x 2 networks: 8,192 rows raise the KL
#: by 6-9 % against all rows; 32,768 are within 0.5 % of all at half the time), the most a layer gets at >= 3 bits
AUTO_ROWS_2BIT = 32768
#: ``calibration_rows="auto"`` at >= 3 bits: ``AUTO_GRAM_COST / (groups * n^2)`` rows in [AUTO_ROWS, AUTO_ROWS_2BIT]:
#: 32,768 up to n = 576 (dev split W4 KL -2 to -5 %), 8,192 from n = 1,152 (wide layers' rows x n^2 cost bounded)
AUTO_GRAM_COST = AUTO_ROWS_2BIT * 576**2

#: The keys a per-layer override mapping may use (``per_channel`` is the legacy spelling of ``granularity``).
OVERRIDE_KEYS = frozenset({"bits", "space", "skip", "granularity", "per_channel", "symmetric", "p", "act_bits"})

PValue = float | tuple[float, ...]


def first_last(names: Sequence[str]) -> frozenset[str]:
    """The first and last of the ordered weighted layers ``names``: the paper keeps their grid uniform (no
    transform); empty for no layer."""
    return frozenset({names[0], names[-1]}) if names else frozenset()


def layer_space(
    name: str, space: str, ends: frozenset[str], *, transform_first_last: bool = False,
    space_overridden: bool = False,
) -> str:
    """The grid space of layer ``name``: ``"uniform"`` when it is one of ``ends`` (see :func:`first_last`), unless
    ``transform_first_last`` or a per-layer override set its space; else ``space``."""
    if name in ends and not transform_first_last and not space_overridden:
        return Space.UNIFORM.value
    return str(space)


def check_p(p: Any, what: str = "p") -> PValue:
    """``p`` as a float, or a non-empty tuple of floats (the candidates searched per layer)."""
    if isinstance(p, bool):
        raise ValueError(f"{what} must be a number or a sequence of numbers, got {p!r}")
    if isinstance(p, (int, float)):
        return float(p)
    numbers = isinstance(p, Sequence) and not isinstance(p, str) and len(p) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
    if numbers:
        return tuple(float(v) for v in p)
    raise ValueError(f"{what} must be a number or a non-empty sequence of numbers, got {p!r}")


def check_widen(factors: Any) -> tuple[float, ...]:
    """``factors`` as a sorted tuple of finite floats ``>= 1`` that contains 1 (the searched range)."""
    if isinstance(factors, str):
        raise ValueError(f"feedback_widen must be a sequence of numbers >= 1, got {factors!r}")
    values = (factors,) if isinstance(factors, (int, float)) and not isinstance(factors, bool) else factors
    try:
        out = tuple(sorted({1.0, *(float(v) for v in values)}))
    except (TypeError, ValueError):
        raise ValueError(f"feedback_widen must be a sequence of numbers >= 1, got {factors!r}") from None
    if any(isinstance(v, bool) for v in values) or not all(math.isfinite(v) and v >= 1.0 for v in out):
        raise ValueError(f"feedback_widen factors must be finite and >= 1 (1 = the searched range), got {factors!r}")
    return out


def check_target_damp(damp: Any) -> float | tuple[float, ...]:
    """``damp`` as a float ``> 0``, or as a sorted tuple of distinct such floats (candidates chosen per layer)."""
    values = (damp,) if isinstance(damp, (int, float)) else damp
    ok = isinstance(values, Sequence) and not isinstance(values, str) and len(values) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values)
    if not ok or isinstance(damp, bool):
        raise ValueError(f"target_damp must be a number > 0 or a non-empty sequence of them, got {damp!r}")
    return float(damp) if isinstance(damp, (int, float)) else tuple(sorted({float(v) for v in values}))


def check_sweeps(sweeps: Any) -> int:
    """``sweeps`` as an int ``>= 0`` (coordinate-descent sweeps after the feedback rounding)."""
    try:
        n = operator.index(sweeps)
    except TypeError:
        n = -1
    if isinstance(sweeps, bool) or n < 0:
        raise ValueError(f"feedback_sweeps must be an integer >= 0, got {sweeps!r}")
    return n


def check_flag(value: Any, name: str) -> bool:
    """``value`` if it is a bool (option ``name``), else ``ValueError``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_feedback_use(rounding: Rounding, sweeps: int, widen: tuple[float, ...] = (1.0,), refit: bool = False) -> None:
    """Refuse ``feedback_sweeps > 0``, a ``feedback_widen`` other than ``(1.0,)`` or ``feedback_refit`` without
    ``rounding="feedback"``."""
    if rounding is Rounding.FEEDBACK or (not sweeps and widen == (1.0,) and not refit):
        return
    raise ValueError(f"feedback_widen={widen}, feedback_sweeps={sweeps} and feedback_refit={refit} act on the "
                     f"feedback rounding: they need rounding='feedback' (got {rounding.value!r}); set "
                     "rounding='feedback' or leave them at their defaults ((1.0,), 0 and False)")


def translate_legacy(options: Mapping[str, Any], what: str = "options") -> dict[str, Any]:
    """``options`` with the legacy ``per_channel=`` turned into ``granularity`` (both: ValueError)."""
    out = dict(options)
    if "per_channel" in out:
        if "granularity" in out:
            raise ValueError(f"{what}: give granularity= or the legacy per_channel=, not both")
        out["granularity"] = granularity(bool(out.pop("per_channel")))
    return out


def _granularity(value: Any, what: str) -> Granularity:
    if not isinstance(value, (PerTensor, PerChannel)):
        raise ValueError(f"{what} must be PerTensor() or PerChannel(), got {value!r}")
    if isinstance(value, PerChannel) and value.axis != 0:
        raise ValueError(
            f"{what}={value!r}: weights are always split along each layer's output-channel axis "
            "(0; 1 for ConvTranspose, found per layer); pass PerChannel()"
        )
    return value


@dataclass(frozen=True)
class LayerOverride:
    """Per-layer changes to a :class:`QuantizeConfig` (``None``: the config's value).

    Attributes:
        bits: ``2..8``.
        space: ``"uniform"`` or ``"sqrt"``; setting it also lifts the first/last-layer rule.
        skip: leave the layer float.
        granularity: ``PerTensor()`` or ``PerChannel()`` (legacy mapping key: ``per_channel``).
        symmetric: zero point 0.
        p: transform exponent, or candidates searched for this layer.
        act_bits: bits of this layer's input activation (needs the config's ``act_bits``: the
            simulation of a W/A deployment; the pt2e quantizer of the report applies it too).
    """

    bits: int | None = None
    space: Space | None = None
    skip: bool = False
    granularity: Granularity | None = None
    symmetric: bool | None = None
    p: PValue | None = None
    act_bits: int | None = None

    def __post_init__(self) -> None:
        if self.bits is not None:
            object.__setattr__(self, "bits", check_bits(int(self.bits)))
        if self.space is not None:
            object.__setattr__(self, "space", Space.parse(self.space))
        if self.granularity is not None:
            object.__setattr__(self, "granularity", _granularity(self.granularity, "override granularity"))
        if self.p is not None:
            object.__setattr__(self, "p", check_p(self.p, "override p"))
        if self.act_bits is not None:
            object.__setattr__(self, "act_bits", check_bits(int(self.act_bits)))
        object.__setattr__(self, "skip", bool(self.skip))
        if self.symmetric is not None:
            object.__setattr__(self, "symmetric", bool(self.symmetric))

    @classmethod
    def from_mapping(cls, name: str, value: LayerOverride | Mapping[str, Any]) -> LayerOverride:
        """The override for layer ``name`` from ``{"bits": 8, ...}`` (keys :data:`OVERRIDE_KEYS`)."""
        if isinstance(value, LayerOverride):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"overrides[{name!r}] must be a mapping or a LayerOverride, got {value!r}")
        bad = set(value) - OVERRIDE_KEYS
        if bad:
            raise ValueError(
                f"overrides[{name!r}] has unknown keys {sorted(bad)}; valid: {sorted(OVERRIDE_KEYS)}"
            )
        return cls(**translate_legacy(value, f"overrides[{name!r}]"))


@dataclass(frozen=True)
class QuantizeConfig:
    """How :func:`~requant_plugin.quantize_weights` quantizes each Conv/ConvTranspose/Linear weight
    to ``T^-1(Q_alpha(T(w)))`` with ``T(w) = sign(w)|w|^p`` (``space="sqrt"``) or ``T = id``.

    Attributes:
        bits: weight bit width, ``2..8``.
        space: ``"sqrt"`` (REQuant with the transform) or ``"uniform"`` (``alpha`` only).
        symmetric: zero point 0 (``convention`` sets the scale), else asymmetric.
        granularity: ``PerTensor()`` or ``PerChannel()`` (each layer's output channels).
        fold_bn: fold BatchNorm into the preceding layer first.
        search: ``"golden"``, ``"grid"`` or ``"minmax"`` (``alpha = 1``).
        p: transform exponent in ``(0, 1]``, or a tuple searched per layer.
        loss_space: weight MSE measured on ``w`` (``"original"``) or on ``T(w)``.
        convention: symmetric scale ``c/((qmax-qmin)/2)`` (torch), ``c/qmax`` (tensorrt) or narrow.
        transform_first_last: also transform the first and last layers (the paper does not).
        objective: ``alpha`` minimises the weight MSE (``"weight"``) or the layer-output MSE
            ``mean_c e_c^T G e_c`` on calibration data (``"output"``).
        bias_correction: add ``(W - Wq) E[x]`` to the bias: ``"none"``, ``"plain"`` (``True``),
            ``"sequential"`` or ``"bn"`` (data-free, from BatchNorm statistics).
        rounding: nearest code, or ``"feedback"`` (column-wise error feedback; needs data).
        feedback_widen: with ``rounding="feedback"``, scale factors ``>= 1`` tried per channel (per
            tensor for ``PerTensor``), the lowest output error kept (``(1.0,)``: the searched range); only on
            layers with >= 4 Gram rows per input feature; unused with ``rounding="nearest"`` (so a recipe's
            factors may stay when you change its rounding).
        feedback_sweeps: with ``rounding="feedback"`` (else ValueError), cyclic coordinate-descent sweeps on the
            kept rounding: each weight in turn moves to the level nearest its 1-D optimum of ``e^T G e``.
        feedback_refit: with ``rounding="feedback"``, then scale each channel's grid (same codes) by the
            least-squares ``lambda = w_hat^T G w / w_hat^T G w_hat``; unused with ``rounding="nearest"``.
        inputs: each layer's input statistics from the float model (``"float"``), or from the
            partly quantized model with the float output as the target (``"quantized"``: the
            search and rounding use ``W* = W E[x_f x_q^T] E[x_q x_q^T]^-1``; needs data).
        act_bits: with ``inputs="quantized"``, also fake-quantize every calibrated layer's input
            per tensor to this many bits (REQuant's activation range on the float inputs), so
            ``W*`` and the sequential bias correction absorb the activation error of a W/A
            deployment at those bits (``None``: activations stay float).
        act_shortcuts: with ``act_bits``, the other reads of a layer's input (a residual shortcut) read it quantized
            too, as an integer graph computes it (opt-in; needs the traced-graph stream, else it warns).
        residual_correction: with ``act_bits``, then add ``E[z_float - z_quant]`` per channel to the bias of each
            residual sum's branch layer, its shortcut read quantized (opt-in; :mod:`.residual_correction`).
        end_bits: the first and last weighted layers at this many bits, their weights and (with
            ``act_bits``) their inputs; per-layer overrides win (``None``: the config's bits). The
            W4A4 tables of BRECQ, QDrop and PD-Quant keep both at 8 bits.
        target_damp: with ``inputs="quantized"``, the ridge ``lambda = damp * mean(diag G)`` that pulls ``W*``
            towards ``W``; or candidates, each layer taking the one whose ``W*`` fitted on the even calibration
            batches predicts the float output of the odd ones best, and vice versa (two-fold cross-validation).
        calibration_rows: im2col rows per layer for the Gram matrices (``None``: all), ``>= 1``, or
            ``"auto"``: :data:`AUTO_ROWS_2BIT` at 2 bits; at 3 bits and more :data:`AUTO_GRAM_COST` over the
            layer's Gram entries, within [:data:`AUTO_ROWS`, :data:`AUTO_ROWS_2BIT`] (:meth:`rows_budget`).
        seed: seeds the row subsampling and the synthetic samples of ``"bn"``.
        input_shape: one input sample's shape for ``bias_correction="bn"`` without data.
        overrides: per layer name, a :class:`LayerOverride` (or its mapping form); ``None``: none.
        recipe: the name of the recipe this config is (reported; its constraints are checked).
    """

    bits: int = 4
    space: Space = Space.SQRT
    symmetric: bool = False
    granularity: Granularity = field(default_factory=PerTensor)
    fold_bn: bool = False
    search: Search = Search.GOLDEN
    p: PValue = 0.5
    loss_space: LossSpace = LossSpace.ORIGINAL
    convention: Convention = Convention.TORCH
    transform_first_last: bool = False
    objective: Objective = Objective.WEIGHT
    bias_correction: BiasCorrection = BiasCorrection.NONE
    rounding: Rounding = Rounding.NEAREST
    feedback_widen: tuple[float, ...] = (1.0,)
    feedback_sweeps: int = 0
    feedback_refit: bool = False
    inputs: Inputs = Inputs.FLOAT
    act_bits: int | None = None
    act_shortcuts: bool = False
    residual_correction: bool = False
    end_bits: int | None = None
    target_damp: float | tuple[float, ...] = TARGET_DAMP
    calibration_rows: int | str | None = "auto"
    seed: int = 0
    input_shape: tuple[int, ...] | None = None
    overrides: Mapping[str, LayerOverride | Mapping[str, Any]] = field(default_factory=dict)
    recipe: str | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "bits", check_bits(self.bits))
        for name, kind in (("space", Space), ("search", Search), ("loss_space", LossSpace),
                           ("convention", Convention), ("objective", Objective), ("rounding", Rounding),
                           ("inputs", Inputs)):
            put(self, name, kind.parse(getattr(self, name)))
        put(self, "bias_correction", BiasCorrection.parse(self.bias_correction))
        put(self, "granularity", _granularity(self.granularity, "granularity"))
        put(self, "p", check_p(self.p))
        put(self, "feedback_widen", check_widen(self.feedback_widen))
        put(self, "feedback_sweeps", check_sweeps(self.feedback_sweeps))
        check_feedback_use(self.rounding, self.feedback_sweeps)
        check_flag(self.feedback_refit, "feedback_refit")
        check_flag(self.act_shortcuts, "act_shortcuts")
        if check_flag(self.residual_correction, "residual_correction") and self.act_bits is None:
            raise ValueError("residual_correction=True corrects the residual sums of a W/A deployment: set act_bits= "
                             "(with inputs='quantized', e.g. recipe='beyond-tensorrt') too")
        if self.act_bits is not None:
            put(self, "act_bits", check_bits(self.act_bits))
            if self.inputs is not Inputs.QUANTIZED:
                raise ValueError(f"act_bits={self.act_bits} simulates the activation quantization in the "
                                 "quantized-input statistics: it needs inputs='quantized' (e.g. recipe='beyond' "
                                 "or 'beyond-tensorrt')")
        if self.end_bits is not None:
            put(self, "end_bits", check_bits(self.end_bits))
        put(self, "target_damp", check_target_damp(self.target_damp))
        rows = self.calibration_rows
        if rows is not None and rows != "auto" and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise ValueError(f"calibration_rows must be positive, None (all) or 'auto', got {rows!r}")
        if self.input_shape is not None:
            put(self, "input_shape", tuple(int(d) for d in self.input_shape))
        if self.overrides is None:  # the documented "no overrides"
            put(self, "overrides", {})
        if not isinstance(self.overrides, Mapping):
            raise TypeError(f"overrides must map layer names to overrides, got {self.overrides!r}")
        put(self, "overrides", {str(n): LayerOverride.from_mapping(str(n), v) for n, v in self.overrides.items()})
        own = sorted(n for n, ov in self.overrides.items() if isinstance(ov, LayerOverride) and ov.act_bits is not None)
        if own and self.act_bits is None:
            raise ValueError(f"overrides give {own} their own act_bits, but the config simulates no activation "
                             "quantization: set act_bits= (with inputs='quantized') too")

    @property
    def per_channel(self) -> bool:
        """True for ``PerChannel`` granularity (the legacy flag)."""
        return isinstance(self.granularity, PerChannel)

    @property
    def cross_validates(self) -> bool:
        """True when each layer chooses its target damp among several candidates (two-fold CV)."""
        return isinstance(self.target_damp, tuple) and len(self.target_damp) > 1

    def override(self, name: str) -> LayerOverride:
        """The override of layer ``name`` (an empty one when it has none)."""
        return LayerOverride.from_mapping(name, self.overrides.get(name, _NO_OVERRIDE))

    @property
    def needs_data(self) -> str | None:
        """The setting that needs calibration data (``None``: the config is data-free)."""
        if self.objective is Objective.OUTPUT:
            return "objective='output'"
        if self.rounding is Rounding.FEEDBACK:
            return "rounding='feedback'"
        if self.inputs is Inputs.QUANTIZED:
            return "inputs='quantized'"
        if self.bias_correction in (BiasCorrection.PLAIN, BiasCorrection.SEQUENTIAL):
            return f"bias_correction={self.bias_correction.value!r}"
        return None

    def replace(self, **options: Any) -> QuantizeConfig:
        """A copy with ``options`` (field names, or the legacy ``per_channel``) changed."""
        unknown = sorted(set(options) - _FIELDS - {"per_channel"})
        if unknown:
            raise TypeError(
                f"unknown quantize option(s) {unknown}; valid: {sorted(_FIELDS | {'per_channel'})}"
            )
        return dataclasses.replace(self, **translate_legacy(options))

    def rows_budget(self, gram_entries: int) -> int | None:
        """The im2col rows of the Gram matrices of a layer with ``gram_entries = groups * n^2`` (``None``: all):
        ``calibration_rows``, or for ``"auto"`` ``clamp(AUTO_GRAM_COST / gram_entries, AUTO_ROWS, AUTO_ROWS_2BIT)``
        (:data:`AUTO_ROWS_2BIT` at 2 bits)."""
        rows = self.calibration_rows
        if rows == "auto":
            if self.bits <= 2:
                return AUTO_ROWS_2BIT
            return min(AUTO_ROWS_2BIT, max(AUTO_ROWS, AUTO_GRAM_COST // max(gram_entries, 1)))
        assert rows is None or isinstance(rows, int)
        return rows

    def settings(self) -> dict[str, object]:
        """The plain ``QuantizationReport.settings`` view (strings, ``None`` for no bias correction)."""
        bc = self.bias_correction
        return dict(
            bits=self.bits, space=self.space.value, symmetric=self.symmetric, per_channel=self.per_channel,
            fold_bn=self.fold_bn, search=self.search.value, p=self.p, loss_space=self.loss_space.value,
            objective=self.objective.value, bias_correction=None if bc is BiasCorrection.NONE else bc.value,
            rounding=self.rounding.value, feedback_widen=self.feedback_widen, feedback_sweeps=self.feedback_sweeps,
            feedback_refit=self.feedback_refit, inputs=self.inputs.value, act_bits=self.act_bits,
            act_shortcuts=self.act_shortcuts, residual_correction=self.residual_correction, end_bits=self.end_bits,
            target_damp=self.target_damp, calibration_rows=self.calibration_rows, seed=self.seed, recipe=self.recipe,
        )


_FIELDS = frozenset(f.name for f in dataclasses.fields(QuantizeConfig))
_NO_OVERRIDE = LayerOverride()
