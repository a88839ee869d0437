"""The configurations of the beyond-the-paper benchmark: the table rows (``quantize_weights``
keywords), the accuracy-vs-size sweep, the calibration repeats, mixed precision and the goals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: the issue's goals: W4 within 0.3 points of FP32, W3 within 1.5
GOAL_W4, GOAL_W3 = 0.3, 1.5


@dataclass(frozen=True)
class Row:
    """One configuration: ``quantize_weights`` keywords plus how to present it."""

    key: str
    label: str
    group: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    snap_int8: bool = False  # snap the result to a per-channel INT8 TensorRT grid afterwards

    @property
    def data(self) -> bool:
        kw = self.kwargs
        return (kw.get("objective") == "output" or kw.get("bias_correction") in ("plain", "sequential", True)
                or kw.get("rounding") == "feedback" or str(kw.get("recipe", "")).startswith(("beyond", "paper+")))


PC = dict(space="uniform", per_channel=True)
ROWS: list[Row] = [
    # the rows (data-free), re-measured here
    Row("minmax-pt", "min-max, per-tensor asym", "issue", dict(space="uniform", search="minmax")),
    Row("alpha-pt", "alpha, per-tensor asym (paper's first stage)", "issue", dict(space="uniform")),
    Row("paper", "alpha + sqrt, per-tensor asym (the paper)", "issue", dict(recipe="paper")),
    Row("minmax-pc-sym", "min-max, per-channel sym (torch scale amax/(2^(b-1)-0.5))", "issue",
        dict(PC, symmetric=True, search="minmax")),
    Row("minmax-pc-trt", "min-max, per-channel sym (TensorRT scale amax/(2^(b-1)-1))", "issue",
        dict(PC, symmetric=True, search="minmax", convention="tensorrt")),
    Row("alpha-pc", "alpha, per-channel asym", "issue", dict(PC)),
    # the paper's own setting, lifted
    Row("paper-bn", "paper + BN bias correction (data-free)", "paper", dict(recipe="paper", bias_correction="bn")),
    Row("paper-bc", "paper + bias correction", "paper", dict(recipe="paper", bias_correction="plain")),
    Row("paper-out", "paper + output objective", "paper", dict(recipe="paper", objective="output")),
    Row("paper-out-bc", "paper + output objective + bias correction", "paper", dict(recipe="paper+")),
    Row("paper-out-bc-fb", "paper + output + bias corr. + feedback rounding", "paper",
        dict(recipe="paper+", rounding="feedback")),
    # per-channel uniform ablation, building up to "beyond"
    Row("pc-bn", "alpha pc + BN bias correction (data-free)", "ablation", dict(PC, bias_correction="bn")),
    Row("pc-bc", "alpha pc + bias correction", "ablation", dict(PC, bias_correction="plain")),
    Row("pc-seq", "alpha pc + sequential bias correction", "ablation", dict(PC, bias_correction="sequential")),
    Row("pc-out", "output objective pc", "ablation", dict(PC, objective="output")),
    Row("pc-out-bc", "output objective pc + bias correction", "ablation",
        dict(PC, objective="output", bias_correction="plain")),
    Row("pc-out-seq", "output objective pc + sequential bias correction", "ablation",
        dict(PC, objective="output", bias_correction="sequential")),
    Row("pc-fb-bc", "alpha pc + feedback + bias corr. (no output objective)", "ablation",
        dict(PC, rounding="feedback", bias_correction="plain")),
    Row("pc-out-fb", "output objective pc + feedback (no bias correction)", "ablation",
        dict(PC, objective="output", rounding="feedback")),
    Row("beyond", "**beyond**: output objective pc + feedback + bias corr.", "beyond", dict(recipe="beyond")),
    Row("beyond-seq", "beyond with sequential bias correction", "beyond",
        dict(recipe="beyond", bias_correction="sequential")),
    Row("beyond-trt", "beyond on the TensorRT grid (pc sym, zp 0)", "beyond", dict(recipe="beyond-tensorrt")),
    Row("beyond-cb", "beyond-codebook (transform p = 0.75 pc)", "beyond", dict(recipe="beyond-codebook")),
    Row("beyond-cb-p", "beyond-codebook, p searched in {0.5..1}", "beyond",
        dict(recipe="beyond-codebook", p=[0.5, 0.625, 0.75, 0.875, 1.0])),
    Row("beyond-cb-int8", "beyond-codebook snapped to an INT8 pc sym grid", "beyond",
        dict(recipe="beyond-codebook"), snap_int8=True),
]
QUICK_ROWS = ("alpha-pt", "paper", "alpha-pc", "paper-out-bc", "pc-out-bc", "pc-out-fb", "beyond", "beyond-cb")
SWEEP: dict[str, tuple[str, dict[str, Any]]] = {  # accuracy against model size
    "paper": ("the paper (per-tensor, sqrt)", dict(recipe="paper")),
    "alpha-pc": ("alpha pc asym (weight MSE)", dict(PC)),
    "beyond": ("beyond (uniform pc)", dict(recipe="beyond")),
    "beyond-cb": ("beyond-codebook (p = 0.75)", dict(recipe="beyond-codebook")),
}

SEED_RUNS = (0, 1, 2)  # calibration subsets for the repeat table
SEED_ROWS = ("pc-out-bc", "pc-fb-bc", "pc-out-fb", "beyond", "beyond-trt", "beyond-cb")
MIXED_BUDGETS = (2.5, 3.0, 4.0)
#: how ``layer_error_curves`` measures each layer (its ``sensitivity``); "layer" runs were cached without the key
MIXED_SENSITIVITIES = ("layer", "network")
MIXED_CANDIDATES = (2, 3, 4, 5, 6, 8)


#: the ablation table: (change, row with it, reference row); the difference is shown per column
ABLATION: tuple[tuple[str, str, str], ...] = (
    ("paper: + bias correction", "paper-bc", "paper"),
    ("paper: + BN bias correction (no data)", "paper-bn", "paper"),
    ("paper: + output objective", "paper-out", "paper"),
    ("paper: + output objective + bias correction", "paper-out-bc", "paper"),
    ("paper: + output + bias corr. + feedback", "paper-out-bc-fb", "paper"),
    ("per-tensor alpha -> per-channel alpha", "alpha-pc", "alpha-pt"),
    ("alpha pc: + bias correction", "pc-bc", "alpha-pc"),
    ("alpha pc: + BN bias correction (no data)", "pc-bn", "alpha-pc"),
    ("alpha pc: + sequential bias correction", "pc-seq", "alpha-pc"),
    ("alpha pc: weight -> output objective", "pc-out", "alpha-pc"),
    ("output pc: + bias correction", "pc-out-bc", "pc-out"),
    ("output pc: + sequential bias correction", "pc-out-seq", "pc-out"),
    ("output pc + bias corr.: + feedback rounding (= beyond)", "beyond", "pc-out-bc"),
    ("beyond: - output objective", "pc-fb-bc", "beyond"),
    ("beyond: - bias correction", "pc-out-fb", "beyond"),
    ("beyond: plain -> sequential bias correction", "beyond-seq", "beyond"),
    ("beyond: asym -> symmetric TensorRT grid", "beyond-trt", "beyond"),
    ("beyond: uniform -> transform p = 0.75", "beyond-cb", "beyond"),
    ("beyond-codebook: p fixed -> p searched", "beyond-cb-p", "beyond-cb"),
    ("beyond-codebook: snapped to INT8 grid", "beyond-cb-int8", "beyond-cb"),
)
