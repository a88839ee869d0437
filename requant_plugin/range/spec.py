""":class:`RangeSpec`: every setting of one range estimate, validated once, as plain data.

A spec is frozen; change one with ``dataclasses.replace`` or by passing field names to
:func:`~.estimate.estimate_range` (``space="sqrt"``), which always win over the spec.
:func:`range_spec` is that one translation: it also takes the legacy positional ``bits`` and the
legacy ``per_channel=`` / ``ch_axis=`` pair (turned into ``granularity`` by
:func:`requant_plugin.options.granularity`).
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field
from typing import Any

from ..core import Grid
from ..options import (
    Convention,
    Granularity,
    LossSpace,
    PerChannel,
    PerTensor,
    Search,
    Space,
    check_bits,
    granularity,
)

__all__ = ["LEGACY_OPTIONS", "RangeSpec", "range_spec"]

#: Keywords :func:`range_spec` accepts besides the fields: ``per_channel`` (bool) and ``ch_axis``.
LEGACY_OPTIONS = ("per_channel", "ch_axis")


@dataclass(frozen=True)
class RangeSpec:
    """How REQuant estimates one tensor's range: ``alpha* = argmin_{alpha in (0, 1]} L(alpha)``.

    ``L(alpha) = mean((w - w_hat(alpha))**2)``, ``w_hat`` quantizing ``T(w)`` on a uniform grid
    whose range is the min-max range scaled by ``alpha``.

    Attributes:
        bits: ``b`` in 2..8: codes ``[0, 2**b - 1]`` asymmetric, ``[-2**(b-1), 2**(b-1) - 1]``
            symmetric (ignored when ``quant_min``/``quant_max`` are given).
        symmetric: zero point fixed (``c = alpha * max|w|``) instead of affine
            (``[alpha * min, alpha * max]``).
        granularity: ``PerTensor()`` (one range) or ``PerChannel(axis)`` (one range per slice
            along ``axis``); legacy keywords ``per_channel=``/``ch_axis=``.
        space: ``"uniform"`` (``T(w) = w``) or ``"sqrt"`` (``T(w) = sign(w) * (|w| / m) ** p``,
            ``m = max|w|``; a grid non-uniform in ``w``).
        search: ``"golden"`` (convexity-aware golden section), ``"grid"`` (``alpha = k /
            grid_points``, the dense reference) or ``"minmax"`` (``alpha = 1``).
        p: the exponent of ``space="sqrt"``, in (0, 1] (``1/2``: REQuant's ``sign(w) sqrt|w|``).
        loss_space: measure the MSE on ``w`` (``"original"``) or on ``T(w)`` (``"transformed"``).
        convention: symmetric ``scale = c / d``: ``"torch"`` (``d = (qmax - qmin) / 2``, e.g.
            ``amax / 127.5``), ``"tensorrt"`` (``d = qmax``, clamp ``[-128, 127]``) or
            ``"narrow"`` (``d = qmax``, codes ``[-127, 127]``).
        quant_min, quant_max: an explicit integer code range (for observers): both or neither.
        grid_points: candidates of ``search="grid"`` (>= 1).
    """

    bits: int = 8
    symmetric: bool = False
    granularity: Granularity = field(default_factory=PerTensor)
    space: Space = Space.UNIFORM
    search: Search = Search.GOLDEN
    p: float = 0.5
    loss_space: LossSpace = LossSpace.ORIGINAL
    convention: Convention = Convention.TORCH
    quant_min: int | None = None
    quant_max: int | None = None
    grid_points: int = 2000

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "space", Space.parse(self.space))
        put(self, "search", Search.parse(self.search))
        put(self, "loss_space", LossSpace.parse(self.loss_space))
        if (self.quant_min is None) != (self.quant_max is None):
            raise ValueError("give both quant_min and quant_max, or neither")
        if self.quant_min is None:
            check_bits(self.bits)
        self.grid()  # bits, the code range and the convention
        put(self, "convention", Convention.parse(self.convention))
        if not isinstance(self.granularity, (PerTensor, PerChannel)):
            raise ValueError(
                f"granularity must be PerTensor() or PerChannel(axis), got {self.granularity!r} "
                "(or pass the legacy per_channel=True, ch_axis=axis)"
            )
        if self.space is Space.SQRT:
            p = float(self.p)
            if not 0.0 < p <= 1.0:
                raise ValueError(f"the transform exponent p must be in (0, 1], got {p}")
        if self.search is Search.GRID and (
            isinstance(self.grid_points, bool) or not isinstance(self.grid_points, int) or self.grid_points < 1
        ):
            raise ValueError(f"grid_points must be a positive integer, got {self.grid_points!r}")

    @property
    def per_channel(self) -> bool:
        """True for ``PerChannel`` granularity (the legacy flag)."""
        return isinstance(self.granularity, PerChannel)

    @property
    def ch_axis(self) -> int:
        """The channel axis of ``PerChannel`` granularity (0 per tensor; the legacy int)."""
        return self.granularity.axis if isinstance(self.granularity, PerChannel) else 0

    @property
    def exponent(self) -> float:
        """The transform exponent actually used: ``p`` for ``"sqrt"``, 1 for ``"uniform"``."""
        return 1.0 if self.space is Space.UNIFORM else float(self.p)

    def grid(self) -> Grid:
        """The integer grid: ``[quant_min, quant_max]`` when given, else the standard ``bits`` one."""
        if self.quant_min is None or self.quant_max is None:
            return Grid.from_bits(check_bits(self.bits), symmetric=self.symmetric, convention=self.convention)
        return Grid(int(self.quant_min), int(self.quant_max), self.symmetric, self.convention)


_FIELDS = frozenset(f.name for f in dataclasses.fields(RangeSpec))


def _legacy_granularity(options: dict[str, Any]) -> None:
    """Replace ``per_channel=``/``ch_axis=`` in ``options`` by ``granularity`` (in place)."""
    if not any(k in options for k in LEGACY_OPTIONS):
        return
    if "granularity" in options:
        raise ValueError("give granularity= or the legacy per_channel=/ch_axis=, not both")
    per_channel = bool(options.pop("per_channel", False))
    axis = options.pop("ch_axis", 0)
    if per_channel and hasattr(axis, "__index__") and not isinstance(axis, bool):
        axis = operator.index(axis)  # a NumPy or torch integer is an int axis
    options["granularity"] = granularity(per_channel, axis)


def range_spec(spec: RangeSpec | int | None = None, /, **options: Any) -> RangeSpec:
    """``spec`` (default :class:`RangeSpec`) with ``options`` (field names) applied; they win.

    An ``int`` (or anything not a spec) in place of ``spec`` is the legacy positional ``bits``;
    the legacy ``per_channel=``/``ch_axis=`` become ``granularity`` here, and only here.
    Unknown names raise ``TypeError`` (as an unexpected keyword would).
    """
    if spec is not None and not isinstance(spec, RangeSpec):
        if "bits" in options:
            raise TypeError("got multiple values for 'bits' (positionally and as bits=)")
        options["bits"] = spec
        spec = None
    unknown = sorted(set(options) - _FIELDS - set(LEGACY_OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown}: valid are {sorted(_FIELDS)} and the legacy {list(LEGACY_OPTIONS)}"
        )
    _legacy_granularity(options)
    if spec is None:
        return RangeSpec(**options)
    return dataclasses.replace(spec, **options) if options else spec
