"""Settings of one ``requant quantize`` / ``requant demo`` run, and what the run produced."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..options import Inputs, Space, granularity
from ..ptq.config import QuantizeConfig
from ..ptq.recipes import make_config, recipe
from .curves import AlphaCurve

__all__ = ["METHOD_LABELS", "ExportSummary", "LayerRow", "PipelineConfig", "PipelineResult"]

#: Method key -> column label (ASCII, so any terminal prints it).
METHOD_LABELS: dict[str, str] = {
    "minmax": "min-max (alpha=1)",
    "requant": "REQuant alpha",
    "requant_sqrt": "REQuant alpha+sqrt",
    "recipe": "REQuant recipe",  # shown as "REQuant <recipe name>" (PipelineConfig.label)
    "recipe_mixed": "REQuant recipe, mixed",  # shown as "REQuant <recipe name> mixed"
}


@dataclass(frozen=True)
class PipelineConfig:
    """What to quantize and how (the ``requant quantize`` options).

    Attributes:
        data: ``cifar10``, ``fashion-mnist``, ``digits``, a folder of CIFAR-style npz files,
            or ``None`` for the best data set found offline.
        model: a zoo name (``resnet20`` ...), ``small-cnn``, or ``None`` (ResNet-20 for
            3x32x32 data, else the SmallCNN).
        weights: ``state_dict`` file for the model (zoo default: the shared models folder;
            SmallCNN default: train it here).
        bits: weight bit widths to evaluate; the lowest one gets the per-layer table, the
            ``L(alpha)`` curves and the export.
        space: ``"sqrt"`` also evaluates REQuant with the sign(w)*sqrt|w| transform;
            ``"uniform"`` evaluates the alpha search alone.
        per_channel, symmetric, fold_bn: weight grid layout, as in ``quantize_weights``.
        act_bits: also fake-quantize the input of every Conv/Linear per tensor at this
            width (min-max ranges for the min-max rows, REQuant ranges for the others).
        end_bits: the first and last Conv/Linear layers at this width in every row: their
            weights and, with ``act_bits``, their inputs (``QuantizeConfig.end_bits``).
        export: write a TensorRT-ready ONNX here (symmetric per-channel Q/DQ).
        export_bits: weight bits of the export (default: the lowest of ``bits``; below 8 the
            codes are emulated inside INT8 containers).
        report: write ``report.md``, ``results.json`` and PNG plots into this folder.
        recipe: also evaluate ``quantize_weights(model, recipe, bits=b, calibration_data=...)`` at
            every width (e.g. ``"beyond"``), on ``calib_images`` train images; ``symmetric`` and
            ``per_channel`` are passed on only when set, ``act_bits`` only to quantized-input recipes.
        mixed_precision: also evaluate the recipe with per-layer widths at each of ``bits`` bits per
            weight on average, chosen by :func:`~requant_plugin.ptq.mixed_precision_bits` (needs
            ``recipe``; excludes ``end_bits``, which fixes two layers' widths); the export takes the
            widths of its own width when that is one of ``bits``.
        calib_images: calibration images (activations, recipe and export), from the train split.
        test_limit: evaluate on a seeded class-stratified subset of this many test images.
    """

    data: str | None = None
    model: str | None = None
    weights: str | None = None
    bits: tuple[int, ...] = (4,)
    space: str = "sqrt"
    per_channel: bool = False
    symmetric: bool = False
    fold_bn: bool = False
    act_bits: int | None = None
    end_bits: int | None = None
    recipe: str | None = None
    mixed_precision: bool = False
    export: str | None = None
    export_bits: int | None = None
    report: str | None = None
    calib_images: int = 256
    test_limit: int | None = None
    train_limit: int | None = None
    train_epochs: int | None = None
    seed: int = 0
    progress: bool = True
    command: str = ""

    @property
    def methods(self) -> list[str]:
        """Method keys evaluated for every bit width."""
        return (["minmax", "requant"] + (["requant_sqrt"] if self.space == "sqrt" else [])
                + (["recipe"] if self.recipe else [])
                + (["recipe_mixed"] if self.recipe and self.mixed_precision else []))

    def label(self, method: str) -> str:
        """Column label of a method key (the recipe row is named after its recipe)."""
        if method in ("recipe", "recipe_mixed"):
            return f"REQuant {self.recipe}" + (" mixed" if method == "recipe_mixed" else "")
        return METHOD_LABELS[method]

    def quantize_config(self, bits: int, space: str) -> QuantizeConfig:
        """The :class:`~requant_plugin.ptq.QuantizeConfig` of one REQuant row at ``bits`` on ``space``."""
        return QuantizeConfig(bits=bits, space=Space.parse(space), symmetric=self.symmetric,
                              granularity=granularity(self.per_channel), end_bits=self.end_bits)

    def recipe_config(self, bits: int, widths: Mapping[str, int] | None = None) -> QuantizeConfig:
        """The config of the recipe row at ``bits``: the recipe, then the options the user set (``widths``:
        per-layer bit widths, the mixed-precision row)."""
        assert self.recipe is not None
        options: dict[str, Any] = {"bits": bits}
        if widths:
            options["overrides"] = {name: {"bits": b} for name, b in widths.items()}
        if self.symmetric:
            options["symmetric"] = True
        if self.per_channel:
            options["granularity"] = granularity(True)
        if self.act_bits and recipe(self.recipe).inputs is Inputs.QUANTIZED:
            options["act_bits"] = self.act_bits
        if self.end_bits is not None:
            options["end_bits"] = self.end_bits
        return make_config(self.recipe, **options)

    @property
    def main_bits(self) -> int:
        """The lowest requested bit width."""
        return min(self.bits)

    @property
    def export_weight_bits(self) -> int:
        """Weight bits of the exported ONNX."""
        return self.export_bits if self.export_bits is not None else self.main_bits


@dataclass(frozen=True)
class LayerRow:
    """Per-layer outcome at the main bit width."""

    name: str
    shape: tuple[int, ...]
    space: str
    alpha: float
    mse_minmax: float
    mse_requant: float
    evaluations: int


@dataclass
class ExportSummary:
    """The exported ONNX and how it was checked."""

    path: Path
    weight_bits: int
    act_bits: int
    report_text: str
    violations: list[str]
    onnx_accuracy: float | None = None
    onnx_fp32_accuracy: float | None = None
    checks: list[str] = field(default_factory=list)


@dataclass
class PipelineResult:
    """Everything a run measured (also written to ``results.json``)."""

    config: PipelineConfig
    model_name: str
    model_source: str
    data_label: str
    notes: list[str]
    fp32: float
    accuracy: dict[int, dict[str, float]]
    layers: list[LayerRow]
    curves: list[AlphaCurve]
    export: ExportSummary | None = None
    widths: dict[int, dict[str, int]] = field(default_factory=dict)  # the mixed-precision row's, per budget
    seconds: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable summary (no arrays except the curves' chosen points)."""
        cfg = self.config
        return {
            "command": cfg.command,
            "model": self.model_name,
            "model_source": self.model_source,
            "data": self.data_label,
            "notes": self.notes,
            "settings": {
                "bits": list(cfg.bits), "space": cfg.space, "per_channel": cfg.per_channel,
                "symmetric": cfg.symmetric, "fold_bn": cfg.fold_bn, "act_bits": cfg.act_bits,
                "end_bits": cfg.end_bits, "recipe": cfg.recipe, "mixed_precision": cfg.mixed_precision,
                "calib_images": cfg.calib_images, "test_limit": cfg.test_limit, "seed": cfg.seed,
            },
            "fp32": self.fp32,
            "accuracy": {str(b): dict(v) for b, v in self.accuracy.items()},
            "widths": {str(b): dict(v) for b, v in self.widths.items()},
            "main_bits": cfg.main_bits,
            "layers": [dict(row.__dict__, shape=list(row.shape)) for row in self.layers],
            "curves": [
                {"layer": c.layer, "bits": c.bits, "space": c.space, "channel": c.channel,
                 "chosen_alpha": c.chosen, "chosen_loss": c.chosen_loss,
                 "minmax_loss": c.minmax_loss, "curve_min_loss": float(c.loss.min()),
                 "curve_argmin_alpha": float(c.alphas[int(c.loss.argmin())])}
                for c in self.curves
            ],
            "export": None if self.export is None else {
                "path": str(self.export.path), "weight_bits": self.export.weight_bits,
                "act_bits": self.export.act_bits, "violations": self.export.violations,
                "onnx_accuracy": self.export.onnx_accuracy,
                "onnx_fp32_accuracy": self.export.onnx_fp32_accuracy,
                "checks": self.export.checks,
            },
            "seconds": self.seconds,
        }
