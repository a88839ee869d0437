"""Per-layer results of weight quantization, printable as a table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayerReport:
    """One quantized layer.

    ``alpha`` and ``mse`` are the mean over channels for per-channel layers; ``mse`` is the
    weight MSE in the loss space, ``rel_mse`` the same divided by ``mean(w**2)``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    bits: int
    space: str
    alpha: float
    mse: float
    rel_mse: float
    evaluations: int
    seconds: float
    note: str = ""


@dataclass
class QuantizationReport:
    """What ``quantize_weights`` did: one :class:`LayerReport` per layer, plus skipped layers."""

    layers: list[LayerReport] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    folded_bn: list[tuple[str, str]] = field(default_factory=list)
    settings: dict[str, object] = field(default_factory=dict)
    act_bits: dict[str, int] = field(default_factory=dict)  # per layer: bits of the simulated input
    act_qparams: dict[str, Any] = field(default_factory=dict)  # per layer: its simulated input's ActQParams
    residual_shifts: dict[str, float] = field(default_factory=dict)  # residual_correction: per layer, mean |delta|

    @property
    def total_seconds(self) -> float:
        """Search time over all layers."""
        return sum(layer.seconds for layer in self.layers)

    def __getitem__(self, name: str) -> LayerReport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no quantized layer named {name!r}; known: {[x.name for x in self.layers]}")

    def to_rows(self) -> list[dict[str, object]]:
        """Plain dicts (for CSV/JSON/loggers)."""
        return [dict(layer.__dict__) for layer in self.layers]

    def table(self) -> str:
        """A fixed-width text table: layer, shape, bits, space, alpha, mse, evaluations, ms."""
        head = ("layer", "shape", "bits", "space", "alpha", "mse", "rel_mse", "evals", "ms")
        rows = [head] + [
            (x.name, "x".join(map(str, x.shape)), str(x.bits), x.space, f"{x.alpha:.4f}",
             f"{x.mse:.3e}", f"{x.rel_mse:.3e}", str(x.evaluations), f"{x.seconds * 1e3:.1f}")
            for x in self.layers
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for name, why in self.skipped.items():
            lines.append(f"skipped {name}: {why}")
        lines.append(f"{len(self.layers)} layers, search {self.total_seconds:.3f} s")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def range_table(weight_ranges: Any, known: list[str] | None = None) -> dict[str, Any]:
    """``{layer: RangeEstimate}`` from a :class:`QuantizationReport` (its layers' ``estimate``)
    or a mapping; ``None`` gives ``{}``. With ``known``, names outside it raise ValueError."""
    if weight_ranges is None:
        return {}
    if isinstance(weight_ranges, QuantizationReport):
        estimates = ((x.name, getattr(x, "estimate", None)) for x in weight_ranges.layers)
        table = {name: est for name, est in estimates if est is not None}
    elif isinstance(weight_ranges, Mapping):
        table = dict(weight_ranges)
    else:
        raise TypeError(
            "weight_ranges must be a QuantizationReport or a mapping of layer names to RangeEstimate, "
            f"got {type(weight_ranges).__name__}"
        )
    if known is not None:
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ValueError(f"weight_ranges names unknown layers {unknown}; quantizable layers are: {known}")
    return table
