"""The configurations of the accuracy tables: methods (rows), measurements, and run plans."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness.markdown import DASH

#: bump to invalidate cached results of a method after changing how it is built
REVISION = {"requant": 1, "peer": 1, "ptq": 1}

MODELS = ("resnet20", "resnet56")
SHORT = {"resnet20": "ResNet-20", "resnet56": "ResNet-56"}
BITS = (8, 6, 4, 3)


@dataclass(frozen=True)
class Method:
    """A row of the tables: label, the grid it uses, and how the model is built."""

    label: str
    grid: str
    kind: str  # "fp32" | "peer" | "requant"
    requant: dict[str, Any] = field(default_factory=dict)


METHODS: dict[str, Method] = {
    "fp32": Method("FP32", DASH, "fp32"),
    "minmax": Method("min-max (alpha = 1)", "asym", "peer"),
    "percentile": Method("percentile 99.9", "asym", "peer"),
    "aciq": Method("ACIQ (Laplace/Gauss fit)", "asym", "peer"),
    "torch_hist": Method("torch.ao HistogramObserver", "asym", "peer"),
    "torchao_mse": Method("torchao AffineQuantizedMSEObserver (100 pts)", "asym map, sym cands", "peer"),
    "modelopt_mse": Method("ModelOpt-style mse (39 amax pts)", "sym (TRT)", "peer"),
    "brevitas_mse": Method("Brevitas MSE (20-pt grid)", "asym (shifted)", "peer"),
    "requant": Method("**REQuant alpha** (ours)", "asym", "requant", {"space": "uniform"}),
    "requant_sqrt": Method("**REQuant alpha + sqrt** (ours)", "asym", "requant", {"space": "sqrt"}),
    "transform_only": Method("sqrt transform, alpha = 1", "asym", "requant", {"space": "sqrt", "search": "minmax"}),
    "ptq_default": Method("torchao pt2e defaults (HistogramObserver acts, MinMax weights)", "sym W, affine A", "ptq"),
    "ptq_requant": Method("**REQuant observers** (pt2e, ours)", "sym W, affine A", "ptq"),
}
PTQ_CALIB = 512
PEER_KEYS = ("percentile", "aciq", "torch_hist", "torchao_mse", "modelopt_mse", "brevitas_mse")
MAIN = ("minmax", *PEER_KEYS, "requant", "requant_sqrt")
FOLDED = ("minmax", "requant", "requant_sqrt")
PER_CHANNEL = ("minmax", "torchao_mse", "modelopt_mse", "brevitas_mse", "requant", "requant_sqrt")
#: per-channel rows at W8/W6 (everything is within noise of FP32 there; saves CPU)
PER_CHANNEL_HIGH = ("minmax", "requant", "requant_sqrt")

#: REQuant settings explored on ResNet-20 at W4 per tensor (issue 3), label -> kwargs
EXPLORE: dict[str, dict[str, Any]] = {
    "sqrt, p=0.5 (default)": {},
    "sqrt, fold_bn": {"fold_bn": True},
    "sqrt, loss in transformed space": {"loss_space": "transformed"},
    "sqrt, transformed loss, fold_bn": {"loss_space": "transformed", "fold_bn": True},
    "sqrt, symmetric": {"symmetric": True},
    "sqrt, symmetric, fold_bn": {"symmetric": True, "fold_bn": True},
    "sqrt, transform first/last too": {"transform_first_last": True},
    "sqrt, transform first/last, fold_bn": {"transform_first_last": True, "fold_bn": True},
    "p=0.4": {"p": 0.4},
    "p=0.6": {"p": 0.6},
    "p=0.7": {"p": 0.7},
    "p=0.6, fold_bn": {"p": 0.6, "fold_bn": True},
    "p=0.7, fold_bn": {"p": 0.7, "fold_bn": True},
}


@dataclass(frozen=True)
class Config:
    """One accuracy measurement."""

    model: str
    method: str
    bits: int = 32
    per_channel: bool = False
    fold_bn: bool = False
    extra: tuple[tuple[str, Any], ...] = ()

    def key(self, images: int, engine: str) -> dict[str, Any]:
        kind = METHODS[self.method].kind
        key = {
            "model": self.model,
            "method": self.method,
            "bits": self.bits,
            "per_channel": self.per_channel,
            "fold_bn": self.fold_bn,
            "extra": dict(self.extra),
            "images": images,
            "engine": "torch" if kind == "ptq" else engine,
            "rev": REVISION.get(kind, 0),
        }
        return key



def uses_code(cfg: Config) -> bool:
    """Whether the result depends on the library sources (REQuant and PTQ rows; peers do not)."""
    return METHODS[cfg.method].kind in ("requant", "ptq")


# --------------------------------------------------------------------------- plans


def main_configs(
    models: tuple[str, ...],
    bits: tuple[int, ...],
    methods: tuple[str, ...] = MAIN,
    folded: tuple[str, ...] = FOLDED,
    per_channel: tuple[str, ...] = PER_CHANNEL,
) -> list[Config]:
    cfgs = [Config(m, "fp32") for m in models]
    for m in models:
        for b in bits:
            cfgs += [Config(m, k, b) for k in methods]
            cfgs += [Config(m, k, b, fold_bn=True) for k in folded]
            pc_methods = per_channel if b <= 4 else tuple(k for k in per_channel if k in PER_CHANNEL_HIGH)
            cfgs += [Config(m, k, b, per_channel=True) for k in pc_methods]
    return cfgs


def ablation_configs(models: tuple[str, ...], bits: tuple[int, ...]) -> list[Config]:
    cfgs = []
    for m in models:
        for b in bits:
            cfgs += [
                Config(m, "minmax", b),
                Config(m, "requant", b),
                Config(m, "transform_only", b),
                Config(m, "requant_sqrt", b),
                Config(m, "requant_sqrt", b, extra=(("loss_space", "transformed"),)),
            ]
    return cfgs


def budget_skip(cfg: Config) -> bool:
    """Cells left out of the full run to fit the CPU budget (ResNet-56 evaluations cost ~3x):
    ResNet-56 W8/W6 per-channel rows, its W8 folded rows, torchao's MSE observer (100 fake-quant
    passes per layer) at W8/W6, and the W6 ablation extras."""
    if cfg.model != "resnet56" or cfg.bits not in (8, 6):
        return False
    if cfg.per_channel or (cfg.fold_bn and cfg.bits == 8) or cfg.method == "torchao_mse":
        return True
    return cfg.method == "transform_only" or (cfg.method == "requant_sqrt" and bool(cfg.extra))


def full_plan(parts: set[str]) -> list[Config]:
    """Every configuration of the full run, most important first (the run can be stopped and
    resumed: finished configurations are cached)."""
    main = main_configs(MODELS, BITS) if "main" in parts else []
    pt_low = [c for c in main if not c.per_channel and not c.fold_bn and c.bits in (4, 3)]
    plan = [Config(m, "fp32") for m in MODELS] + pt_low
    if "explore" in parts:
        plan += [explore_config(k, 4) for k in EXPLORE]
        plan += [Config("resnet20", k, b) for k in ("requant", "requant_sqrt") for b in BITS]
    plan += [c for c in main if not c.per_channel and not c.fold_bn]
    plan += [c for c in main if c.fold_bn]
    plan += [c for c in main if c.per_channel]
    if "ablation" in parts:
        plan += ablation_configs(MODELS, (6, 4, 3))
        plan += [Config(m, "requant_sqrt", b, fold_bn=True) for m in MODELS for b in (6, 4, 3)]
    if "ptq" in parts:
        plan += ptq_configs(("resnet20",))
    return [c for c in dict.fromkeys(plan) if not budget_skip(c)]


def explore_config(label: str, bits: int, model: str = "resnet20") -> Config:
    """The measurement of the explored REQuant setting ``label`` at ``bits`` (an ``EXPLORE`` row)."""
    kw = dict(EXPLORE[label])
    fold = bool(kw.pop("fold_bn", False))
    return Config(model, "requant_sqrt", bits, fold_bn=fold, extra=tuple(sorted(kw.items())))


PTQ_CELLS = ((8, True), (4, True), (4, False))  # (weight bits, per channel), activations 8 bits


def ptq_configs(models: tuple[str, ...]) -> list[Config]:
    """Full PTQ rows: torchao defaults and REQuant observers at every ``PTQ_CELLS`` cell, A8."""
    return [
        Config(m, k, b, per_channel=pc, extra=(("act_bits", 8),))
        for m in models
        for b, pc in PTQ_CELLS
        for k in ("ptq_default", "ptq_requant")
    ]

