"""The one vocabulary of options, declared once: every entry point validates against these.

Plain Python (no torch, no NumPy), so :mod:`requant_plugin.core` and every integration share
it. Each choice is a ``str`` enum, so the documented string spellings (``space="sqrt"``) keep
working and compare equal to the members; :meth:`Choice.parse` turns either into the member and
raises a ``ValueError`` that lists the valid values. Granularity is a type, as in torchao:
``PerTensor()`` or ``PerChannel(axis)`` instead of a bool plus an int.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

__all__ = [
    "MAX_BITS", "MIN_BITS", "BiasCorrection", "Choice", "Convention", "Granularity", "Inputs", "LossSpace",
    "Objective", "PerChannel", "PerTensor", "Rounding", "Search", "Sensitivity", "Space", "check_bits",
    "granularity",
]

MIN_BITS, MAX_BITS = 2, 8

_C = TypeVar("_C", bound="Choice")


class Choice(str, Enum):
    """A named option whose members are their own string spellings."""

    @classmethod
    def parse(cls: type[_C], value: Any, what: str | None = None) -> _C:
        """The member spelled ``value`` (a member or its string), else ``ValueError`` listing all."""
        try:
            return cls(value)
        except ValueError:
            name = what or cls.option_name()
            raise ValueError(f"unknown {name} {value!r}: valid values are {cls.values()}") from None

    @classmethod
    def values(cls) -> list[str]:
        """Every valid spelling, in declaration order."""
        return [m.value for m in cls]

    @classmethod
    def option_name(cls) -> str:
        """The keyword this option is passed as (``LossSpace`` -> ``loss_space``)."""
        return "".join("_" + c.lower() if c.isupper() else c for c in cls.__name__).lstrip("_")

    def __str__(self) -> str:
        return str(self.value)


class Space(Choice):
    """Where the uniform grid lives: ``w`` itself, or ``T(w) = sign(w)|w|^p`` (REQuant's sqrt)."""

    UNIFORM = "uniform"
    SQRT = "sqrt"


class Search(Choice):
    """How ``alpha`` is found: convexity-aware golden section, a dense grid, or ``alpha = 1``."""

    GOLDEN = "golden"
    GRID = "grid"
    MINMAX = "minmax"


class LossSpace(Choice):
    """Where the MSE is measured: on ``w`` (original) or on ``T(w)`` (transformed)."""

    ORIGINAL = "original"
    TRANSFORMED = "transformed"


class Convention(Choice):
    """Symmetric scale from the clip value ``c``: ``c/((qmax-qmin)/2)`` (torch), ``c/qmax`` (tensorrt),
    or the narrow ``[-qmax, qmax]`` grid (narrow)."""

    TORCH = "torch"
    TENSORRT = "tensorrt"
    NARROW = "narrow"


class Objective(Choice):
    """What a layer's ``alpha`` minimises: the weight MSE (the paper) or the layer-output MSE (data)."""

    WEIGHT = "weight"
    OUTPUT = "output"


class Rounding(Choice):
    """Round each weight to its nearest code, or column by column with error feedback (data)."""

    NEAREST = "nearest"
    FEEDBACK = "feedback"


class Inputs(Choice):
    """Each layer's input statistics: from the float model, or from the partly quantized model with
    the float layer's output as the target (data)."""

    FLOAT = "float"
    QUANTIZED = "quantized"


class BiasCorrection(Choice):
    """Add ``(W - Wq) E[x]`` to the bias: none, float statistics, sequential statistics, or BN statistics."""

    NONE = "none"
    PLAIN = "plain"
    SEQUENTIAL = "sequential"
    BN = "bn"

    @classmethod
    def parse(cls, value: Any, what: str | None = None) -> BiasCorrection:
        """Also accept ``False``/``None`` (none) and ``True`` (plain), the documented shorthands."""
        if value is None or value is False:
            return cls.NONE
        if value is True:
            return cls.PLAIN
        if isinstance(value, bool) or not isinstance(value, str):
            raise ValueError(
                f"unknown bias_correction {value!r}: valid values are False, True, {cls.values()}"
            )
        return super().parse(value, what)


class Sensitivity(Choice):
    """A layer's error in mixed precision: its estimated share of the network output's KL (Fisher-weighted
    output MSE), or its own output MSE relative to its float output's."""

    NETWORK = "network"
    LAYER = "layer"


@dataclass(frozen=True)
class PerTensor:
    """One range for the whole tensor."""


@dataclass(frozen=True)
class PerChannel:
    """One range per slice along ``axis`` (0: output channels of Conv/Linear, 1: ConvTranspose)."""

    axis: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise ValueError(f"PerChannel axis must be an int, got {self.axis!r}")


Granularity = PerTensor | PerChannel


def granularity(per_channel: bool, axis: int = 0) -> Granularity:
    """The granularity for the legacy ``(per_channel, ch_axis)`` pair."""
    return PerChannel(axis) if per_channel else PerTensor()


def check_bits(bits: Any) -> int:
    """``bits`` as an int if it is an integer in ``[MIN_BITS, MAX_BITS]``, else ``ValueError``."""
    if isinstance(bits, bool) or not hasattr(bits, "__index__"):
        raise ValueError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    value = int(bits.__index__())
    if not MIN_BITS <= value <= MAX_BITS:
        raise ValueError(
            f"bits={bits} is not supported: valid values are {list(range(MIN_BITS, MAX_BITS + 1))}"
        )
    return value
