"""What :func:`~.onnx_qdq.export_onnx_qdq` wrote: per-layer weights, activation scales, checks."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Violation:
    """A broken TensorRT rule found by :func:`~.trt_rules.check_tensorrt_compat`.

    ``severity`` is ``"error"`` (TensorRT rejects the graph or cannot fuse as intended) or
    ``"warning"`` (valid, but a layer stays in float).
    """

    rule: str
    node: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"[{self.severity}] {self.rule} at {self.node}: {self.message}"


@dataclass(frozen=True)
class WeightInfo:
    """One quantized weight: REQuant settings and the error of what was written.

    ``fq_mse`` is REQuant's own fake-quant MSE, ``mse`` the MSE of the int8 weights written,
    ``snap_extra_mse = mse - fq_mse`` the cost of snapping to the int8 grid.
    """

    layer: str
    node: str
    op_type: str
    tensor: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    axis: int | None
    bits: int
    space: str
    alpha: float
    fq_mse: float
    mse: float
    snap_extra_mse: float
    rel_mse: float
    distinct_int8: int


@dataclass(frozen=True)
class ActivationInfo:
    """One quantized activation tensor: its scale and where the scale came from."""

    tensor: str
    scale: float
    amax: float
    alpha: float
    source: str  # "calibrated" or "inherited from <tensor>"


@dataclass
class ExportReport:
    """The result of an export. ``violations`` holds errors and warnings of the rules check;
    ``verification`` holds what :func:`~.verify.verify_export` measured (if run)."""

    path: Path
    opset: int
    fp16: bool
    settings: dict[str, Any] = field(default_factory=dict)
    weights: list[WeightInfo] = field(default_factory=list)
    activations: list[ActivationInfo] = field(default_factory=list)
    residual_adds: list[tuple[str, int | None, str | None]] = field(default_factory=list)
    unquantized: list[tuple[str, str, str]] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    file_size: int = 0
    calibration_samples: int = 0
    seconds: float = 0.0
    verification: dict[str, Any] = field(default_factory=dict)

    @property
    def act_scales(self) -> dict[str, float]:
        """Scale by ONNX tensor name (input to :func:`~.calib_cache.write_calibration_cache`)."""
        return {a.tensor: a.scale for a in self.activations}

    @property
    def errors(self) -> list[Violation]:
        """Violations of severity ``"error"``."""
        return [v for v in self.violations if v.severity == "error"]

    def weight(self, layer: str) -> WeightInfo:
        """The :class:`WeightInfo` of ``layer``."""
        for w in self.weights:
            if layer in (w.layer, w.node, w.tensor):
                return w
        raise KeyError(f"no quantized weight for {layer!r}; known: {[w.layer for w in self.weights]}")

    def unquantized_summary(self) -> dict[str, int]:
        """Count of float (unquantized) ops by op type."""
        return dict(Counter(op for _, op, _ in self.unquantized))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text (written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=2, default=str)
        if path is not None:
            Path(path).write_text(text)
        return text

    def table(self) -> str:
        """Fixed-width per-layer table followed by activation, float-op and check summaries."""
        head = ("layer", "op", "shape", "bits", "space", "alpha", "fq_mse", "int8_mse", "snap_extra", "int8s")
        rows = [head] + [
            (
                w.layer,
                w.op_type,
                "x".join(map(str, w.shape)),
                str(w.bits),
                w.space,
                f"{w.alpha:.4f}",
                f"{w.fq_mse:.3e}",
                f"{w.mse:.3e}",
                f"{w.snap_extra_mse:+.2e}",
                str(w.distinct_int8),
            )
            for w in self.weights
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(n) for c, n in zip(r, widths, strict=False)) for r in rows]
        lines.insert(1, "  ".join("-" * n for n in widths))
        n_inh = sum(1 for a in self.activations if a.source != "calibrated")
        lines.append(
            f"{len(self.weights)} weights, {len(self.activations)} activation tensors "
            f"({n_inh} inheriting a scale), {self.calibration_samples} calibration samples"
        )
        if self.unquantized:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.unquantized_summary().items()))
            lines.append(f"float ops: {ops}")
        errs = self.errors
        lines.append(f"TensorRT rules: {len(errs)} errors, {len(self.violations) - len(errs)} warnings")
        lines.extend(f"  {v}" for v in self.violations)
        for key, value in self.verification.items():
            lines.append(f"verify {key}: {value}")
        lines.append(
            f"wrote {self.path} ({self.file_size:,} bytes, opset {self.opset}"
            f"{', fp16' if self.fp16 else ''}) in {self.seconds:.1f} s"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
