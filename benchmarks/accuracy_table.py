"""Accuracy tables: REQuant vs the range estimators people use, on the shared CIFAR-10 ResNets.

Weights-only fake quantization (activations FP32) of every Conv/Linear layer of the shared
ResNet-20 and ResNet-56, top-1 on the CIFAR-10 test set (10,000 images), at W8/W6/W4/W3:

* per-tensor, BN not folded: min-max, percentile, ACIQ, torch.ao HistogramObserver, torchao
  AffineQuantizedMSEObserver, ModelOpt-style 39-point amax grid, Brevitas MSE, REQuant alpha,
  REQuant alpha + sqrt transform;
* per-tensor, BN folded first: min-max, REQuant alpha, REQuant + sqrt;
* per-channel: min-max and the MSE peers, REQuant alpha, REQuant + sqrt;
* the paper's ablation (standard ranges, alpha search, transform, both), REQuant settings
  explored on ResNet-20 (issue 3), and, when ``requant_plugin.qconfig`` exists, full PTQ rows.

REQuant runs through the public ``quantize_weights`` (first and last layers get the plain
alpha search, as in the paper); peers through ``benchmarks/peers``. Each finished
configuration is cached in ``benchmarks/results/accuracy.json`` (rerun = resume).
``--quick``: ResNet-20 on 1,000 stratified test images, five methods at W4/W3 per tensor,
plus an ONNX Runtime vs torch agreement check; ``--smoke``: 300 images, three methods at W3.
Both check the ordering claims of the full tables and exit non-zero when one fails.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from benchmarks import peers
from benchmarks.common import (
    CORE_HEADER,
    CORE_ORDER,
    DASH,
    DOCS,
    QUICK_OUT,
    RESULTS,
    RESULTS_HEADER,
    RESULTS_ORDER,
    Evaluator,
    ResultCache,
    apply_per_layer,
    command,
    environment,
    fmt,
    load_fp32,
    load_test_images,
    md_table,
    setup,
    weights_digest,
    write_section,
)

#: bump to invalidate cached results of a method after changing how it is built
REVISION = {"requant": 1, "peer": 1, "ptq": 1}


def code_digest() -> str:
    """Hash of the REQuant sources the results depend on (cache key for REQuant rows)."""
    import hashlib

    pkg = Path(__file__).resolve().parents[1] / "requant_plugin"
    files = [
        *sorted((pkg / "core").glob("*.py")),
        pkg / "range.py",
        pkg / "ptq" / "weights.py",
        pkg / "_observer_base.py",
        pkg / "pt2e.py",
    ]
    h = hashlib.sha1()
    for f in files:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:10]


CODE = code_digest()

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


def _uses_code(cfg: Config) -> bool:
    return METHODS[cfg.method].kind in ("requant", "ptq")


def normalise_cache(cache: ResultCache) -> None:
    """Move a ``code`` digest found in old keys into the record (keys stay code-free)."""
    import json

    fixed: dict[str, Any] = {}
    for k, rec in cache.data.items():
        key = json.loads(k)
        code = key.pop("code", None)
        if code is not None and isinstance(rec, dict):
            rec = {**rec, "code": code}
        fixed[ResultCache.key(key)] = rec
    cache.data = fixed


def build_ptq(fp32: nn.Module, cfg: Config, calib: list[torch.Tensor]) -> nn.Module:
    """Full PTQ through torchao pt2e (x86 Inductor quantizer specs): weights ``cfg.bits``,
    activations ``act_bits`` (default 8), calibrated on ``calib``; the converted graph
    (decomposed quantize/dequantize ops, sub-8-bit ranges honoured) is returned."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from requant_plugin.pt2e import (
        get_requant_quantizer,
        get_torchao_default_quantization_config,
        make_quantizer,
    )

    extra = dict(cfg.extra)
    act_bits = int(extra.get("act_bits", 8))
    if cfg.method == "ptq_requant":
        quantizer = get_requant_quantizer(cfg.bits, act_bits, per_channel=cfg.per_channel)
    else:
        quantizer = make_quantizer(
            get_torchao_default_quantization_config(cfg.bits, act_bits, per_channel=cfg.per_channel)
        )
    batch = torch.export.Dim("batch", min=1, max=4096)
    exported = torch.export.export(fp32, (calib[0],), dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for x in calib:
            prepared(x)
    return convert_pt2e(prepared)


def build(fp32: nn.Module, cfg: Config, calib: Callable[[], list[torch.Tensor]] | None = None) -> nn.Module:
    """The weight-quantized model for ``cfg`` (``fp32`` is never modified)."""
    method = METHODS[cfg.method]
    if method.kind == "fp32":
        return fp32
    if method.kind == "ptq":
        if calib is None:
            raise ValueError("PTQ configurations need calibration images")
        return build_ptq(fp32, cfg, calib())
    if method.kind == "peer":
        mod = peers.get(cfg.method)

        def fn(name: str, w: torch.Tensor, ch_axis: int) -> torch.Tensor:
            return mod.quantize_weight(w, cfg.bits, per_channel=cfg.per_channel, symmetric=False, ch_axis=ch_axis)

        return apply_per_layer(fp32, fn, fold_bn=cfg.fold_bn)
    from requant_plugin import quantize_weights

    kwargs: dict[str, Any] = {**method.requant, "per_channel": cfg.per_channel, "fold_bn": cfg.fold_bn}
    kwargs.update(dict(cfg.extra))
    model, _ = quantize_weights(fp32, cfg.bits, **kwargs)
    return model


class Runner:
    """Evaluates configurations with caching and prints one line per result."""

    def __init__(
        self, evaluator: Evaluator, cache: ResultCache, fresh: bool = False, refresh_stale: bool = False
    ) -> None:
        self.ev, self.cache, self.fresh, self.refresh_stale = evaluator, cache, fresh, refresh_stale
        normalise_cache(cache)
        self.models: dict[str, nn.Module] = {}
        self.failed: dict[Config, str] = {}
        self._calib: list[torch.Tensor] | None = None

    def calib(self) -> list[torch.Tensor]:
        if self._calib is None:
            from benchmarks.common import load_calibration

            self._calib = load_calibration(PTQ_CALIB, seed=0)
        return self._calib

    def model(self, name: str) -> nn.Module:
        if name not in self.models:
            self.models[name] = load_fp32(name)
        return self.models[name]

    def get(self, cfg: Config) -> dict[str, Any] | None:
        return self.cache.get(cfg.key(self.ev.images.n, self.ev.engine))

    def acc(self, cfg: Config) -> float | None:
        rec = self.get(cfg)
        return None if rec is None else float(rec["acc"])

    def digest(self, cfg: Config) -> str | None:
        rec = self.get(cfg)
        return None if rec is None else str(rec.get("digest"))

    def stale(self, cfg: Config) -> bool:
        """A cached REQuant result computed with other REQuant sources than the ones here now."""
        rec = self.get(cfg)
        return rec is not None and _uses_code(cfg) and rec.get("code") not in (None, CODE)

    def codes_used(self) -> set[str]:
        return {str(r["code"]) for r in self.cache.data.values() if isinstance(r, dict) and r.get("code")}

    def run(self, cfgs: list[Config]) -> None:
        todo = [
            c
            for c in dict.fromkeys(cfgs)
            if self.fresh or self.get(c) is None or (self.refresh_stale and self.stale(c))
        ]
        print(f"{len(cfgs)} configurations, {len(todo)} to evaluate on {self.ev.images.n} images", flush=True)
        for i, cfg in enumerate(todo, 1):
            t0 = time.perf_counter()
            try:
                model = build(self.model(cfg.model), cfg, self.calib)
            except (ImportError, NotImplementedError) as exc:
                self.failed[cfg] = f"{type(exc).__name__}: {exc}"
                print(f"[{i}/{len(todo)}] {cfg}: skipped ({exc})", flush=True)
                continue
            t1 = time.perf_counter()
            acc = self.ev.accuracy(model, "torch" if METHODS[cfg.method].kind == "ptq" else None)
            t2 = time.perf_counter()
            rec = {
                "acc": acc,
                "quant_s": round(t1 - t0, 3),
                "eval_s": round(t2 - t1, 3),
                "digest": weights_digest(model),
                "code": CODE if _uses_code(cfg) else None,
                "when": datetime.datetime.now().isoformat(timespec="seconds"),
            }
            self.cache.put(cfg.key(self.ev.images.n, self.ev.engine), rec)
            print(
                f"[{i}/{len(todo)}] {cfg.model} {cfg.method} W{cfg.bits} pc={cfg.per_channel} "
                f"fold={cfg.fold_bn} {dict(cfg.extra)}: {acc:.2f}%  "
                f"(quant {t1 - t0:.1f}s, eval {t2 - t1:.1f}s)",
                flush=True,
            )


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
    kw = dict(EXPLORE[label])
    fold = bool(kw.pop("fold_bn", False))
    return Config(model, "requant_sqrt", bits, fold_bn=fold, extra=tuple(sorted(kw.items())))


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """``better`` beats ``worse`` (top-1) on every measured cell of ``bits`` x ``models``.

    ``expected=True``: the full tables support it and ``--quick``/``--smoke`` fail when it does not
    hold on their subset; ``expected=False``: a claim one would like to make that the full tables
    refute, reported so that nobody makes it.
    """

    text: str
    better: str
    worse: str
    bits: tuple[int, ...]
    per_channel: bool = False
    fold_bn: bool = False
    models: tuple[str, ...] = MODELS
    expected: bool = True


CLAIMS = (
    Claim("REQuant alpha + sqrt beats min-max at W4 (per tensor)", "requant_sqrt", "minmax", (4,)),
    Claim(
        "REQuant alpha + sqrt beats min-max at W3 on ResNet-20 (per tensor)",
        "requant_sqrt",
        "minmax",
        (3,),
        models=("resnet20",),
    ),
    Claim(
        "REQuant alpha beats min-max at W4 and W3 on ResNet-20 (per tensor)",
        "requant",
        "minmax",
        (4, 3),
        models=("resnet20",),
    ),
    Claim(
        "REQuant alpha + sqrt beats min-max at W4 and W3 (per tensor, BN folded)",
        "requant_sqrt",
        "minmax",
        (4, 3),
        fold_bn=True,
    ),
    Claim(
        "REQuant alpha + sqrt beats the ModelOpt-style grid at W4 and W3 (per tensor)",
        "requant_sqrt",
        "modelopt_mse",
        (4, 3),
    ),
    Claim(
        "REQuant alpha + sqrt beats min-max at W3 on ResNet-56 (per tensor)",
        "requant_sqrt",
        "minmax",
        (3,),
        models=("resnet56",),
        expected=False,
    ),
    Claim(
        "REQuant alpha beats min-max at W4 and W3 on ResNet-56 (per tensor)",
        "requant",
        "minmax",
        (4, 3),
        models=("resnet56",),
        expected=False,
    ),
    Claim(
        "REQuant alpha + sqrt beats Brevitas MSE at W4 and W3 (per tensor)",
        "requant_sqrt",
        "brevitas_mse",
        (4, 3),
        expected=False,
    ),
    Claim(
        "REQuant alpha + sqrt beats percentile clipping at W4 and W3 (per tensor)",
        "requant_sqrt",
        "percentile",
        (4, 3),
        expected=False,
    ),
)


def check_claims(runner: Runner, models: tuple[str, ...]) -> list[tuple[Claim, bool, list[str]]]:
    """Evaluate every claim on the measured cells; returns (claim, holds, cell notes)."""
    out = []
    for cl in CLAIMS:
        notes, ok, seen = [], True, False
        for m in models:
            if m not in cl.models:
                continue
            for b in cl.bits:
                a = runner.acc(Config(m, cl.better, b, cl.per_channel, cl.fold_bn))
                c = runner.acc(Config(m, cl.worse, b, cl.per_channel, cl.fold_bn))
                if a is None or c is None:
                    continue
                seen = True
                notes.append(f"{SHORT[m]} W{b}: {a:.2f} vs {c:.2f}")
                ok &= a > c
        if seen:
            out.append((cl, ok, notes))
    return out


# --------------------------------------------------------------------------- markdown


def grid_table(
    runner: Runner,
    models: tuple[str, ...],
    bits: tuple[int, ...],
    methods: tuple[str, ...],
    per_channel: bool,
    fold_bn: bool,
) -> str:
    """Rows = methods, columns = model x bits; best quantized cell per column in bold."""
    heads = ["method", "grid"] + [f"{SHORT[m]} W{b}" for m in models for b in bits]
    cols = [(m, b) for m in models for b in bits]
    vals = {k: [runner.acc(Config(m, k, b, per_channel, fold_bn)) for m, b in cols] for k in methods}
    best = [max((x for v in vals.values() if (x := v[i]) is not None), default=None) for i in range(len(cols))]
    rows = []
    fp = [runner.acc(Config(m, "fp32")) for m, _ in cols]
    rows.append(["FP32", DASH, *[fmt(x) for x in fp]])
    for k in methods:
        cells = []
        for i, x in enumerate(vals[k]):
            if x is None:
                failed = next(
                    (why for c, why in runner.failed.items() if c.method == k and c.per_channel == per_channel),
                    None,
                )
                cells.append("n/a" if failed else DASH)
            else:
                top = best[i]
                cells.append(f"**{x:.2f}**" if top is not None and x >= top else f"{x:.2f}")
        rows.append([METHODS[k].label, METHODS[k].grid, *cells])
    return md_table(heads, rows, "ll" + "r" * len(cols))


def peer_wins(
    runner: Runner,
    models: tuple[str, ...],
    bits: tuple[int, ...],
    methods: tuple[str, ...],
    per_channel: bool,
    fold_bn: bool,
) -> list[str]:
    """Cells where some peer beats both REQuant rows."""
    out = []
    for m in models:
        for b in bits:
            ours = [runner.acc(Config(m, k, b, per_channel, fold_bn)) for k in ("requant", "requant_sqrt")]
            ours_v = [x for x in ours if x is not None]
            if not ours_v:
                continue
            for k in methods:
                if METHODS[k].kind != "peer":
                    continue
                x = runner.acc(Config(m, k, b, per_channel, fold_bn))
                if x is not None and x > max(ours_v):
                    out.append(f"{SHORT[m]} W{b}: {METHODS[k].label} {x:.2f} > REQuant best {max(ours_v):.2f}")
    return out


def accuracy_section(runner: Runner, models: tuple[str, ...], bits: tuple[int, ...], cmd: str) -> str:
    n = runner.ev.images.n
    parts = [
        "## Accuracy: weights-only quantization (activations FP32)",
        "",
        f"Command: `{cmd}`. Top-1 (%) on {n:,} CIFAR-10 test images (the shared JPEG test set, so FP32 "
        "is below the models' original figures), every Conv/Linear layer quantized at the same bit width, "
        "biases and BN in FP32. Best quantized value per column in **bold**. Seed 0; engine: ONNX Runtime "
        "CPU on the FP32 graph carrying the fake-quantized weights (identical top-1 to "
        "`requant_plugin.data.evaluate_accuracy`, checked by `--quick`).",
        "",
        f"Environment: {environment()}.",
        "",
        "Grid column: the grid each method uses when asked for an asymmetric per-tensor range — "
        "`asym` = unsigned codes with a zero point; ModelOpt's integer path is symmetric only (TensorRT "
        "scale amax/(2^(b-1)-1)); torchao's MSE observer searches symmetric candidates (-t, t) even with the "
        "asymmetric mapping. REQuant: asymmetric range [alpha*min, alpha*max] (zero point fixed); first and "
        "last layers never transformed (plain alpha search), as in the paper.",
        "",
        "### Per-tensor, BN not folded",
        "",
        grid_table(runner, models, bits, MAIN, False, False),
        "",
        "### Per-tensor, BN folded into the convolutions before quantizing",
        "",
        grid_table(runner, models, bits, FOLDED, False, True),
        "",
        "### Per-channel (output channels), BN not folded",
        "",
        "Folding BN scales each output channel by a constant, which a per-channel range absorbs, so "
        "per-channel results do not depend on folding (HistogramObserver is per-tensor only). To save CPU "
        "the MSE peers are run per channel at W4/W3 only (at W8/W6 every per-channel row is within noise "
        "of FP32).",
        "",
        "Cells marked with a dash were not run to fit the CPU budget (ResNet-56 costs about 3x ResNet-20 "
        "per evaluation): ResNet-56 per-channel W8/W6, ResNet-56 BN-folded W8, and torchao's MSE observer "
        "(100 fake-quant passes per layer) on ResNet-56 at W8/W6.",
        "",
        grid_table(runner, models, bits, PER_CHANNEL, True, False),
        "",
    ]
    wins = []
    for pc, fold, meths, name in (
        (False, False, MAIN, "per-tensor"),
        (False, True, FOLDED, "per-tensor, folded"),
        (True, False, PER_CHANNEL, "per-channel"),
    ):
        wins += [f"- {name}: {w}" for w in peer_wins(runner, models, bits, meths, pc, fold)]
    parts += ["### Where a peer wins", ""]
    parts += wins if wins else ["No peer beats the better REQuant row in any cell."]
    if runner.failed:
        parts += [
            "",
            "Not run: " + "; ".join(sorted({f"{c.method}: {why}" for c, why in runner.failed.items()})),
        ]
    return "\n".join(parts)


def ablation_section(runner: Runner, models: tuple[str, ...], bits: tuple[int, ...], cmd: str) -> str:
    rows_def = [
        ("Standard range (min-max)", Config("", "minmax")),
        ("alpha search only", Config("", "requant")),
        ("sqrt transform only (alpha = 1)", Config("", "transform_only")),
        ("alpha search + transform (REQuant)", Config("", "requant_sqrt")),
        (
            "alpha + transform, loss in transformed space",
            Config("", "requant_sqrt", extra=(("loss_space", "transformed"),)),
        ),
        ("alpha + transform, BN folded", Config("", "requant_sqrt", fold_bn=True)),
    ]
    cols = [(m, b) for m in models for b in bits]
    heads = ["setting"] + [f"{SHORT[m]} W{b}" for m, b in cols]
    rows = [["FP32", *[fmt(runner.acc(Config(m, "fp32"))) for m, _ in cols]]]
    for label, tmpl in rows_def:
        cells = []
        for m, b in cols:
            c = Config(m, tmpl.method, b, tmpl.per_channel, tmpl.fold_bn, tmpl.extra)
            cells.append(fmt(runner.acc(c)))
        rows.append([label, *cells])
    return "\n".join(
        [
            "## Ablation (the paper's: standard ranges vs alpha search vs transform vs both)",
            "",
            f"Command: `{cmd}`. Per-tensor, asymmetric, weights only, top-1 (%) on "
            f"{runner.ev.images.n:,} test images. The paper reports, for CIFAR-10 ResNet-18 (bit width not "
            "stated, 4 implied), standard 89.09 -> alpha + reshaping 94.67; it gives no intermediate rows.",
            "",
            md_table(heads, rows, "l" + "r" * len(cols)),
        ]
    )


def explore_section(runner: Runner, best_label: str, cmd: str) -> str:
    fp = runner.acc(Config("resnet20", "fp32"))
    rows = []
    for label in EXPLORE:
        rows.append([label, fmt(runner.acc(explore_config(label, 4))), fmt(runner.acc(explore_config(label, 3)))])
    base = [
        [
            "min-max (alpha = 1)",
            fmt(runner.acc(Config("resnet20", "minmax", 4))),
            fmt(runner.acc(Config("resnet20", "minmax", 3))),
        ],
        [
            "REQuant alpha (uniform)",
            fmt(runner.acc(Config("resnet20", "requant", 4))),
            fmt(runner.acc(Config("resnet20", "requant", 3))),
        ],
    ]
    w = {b: runner.acc(explore_config(best_label, b)) for b in BITS}
    lines = [
        "## Accuracy: ResNet-20 weights only (issue 3 acceptance)",
        "",
        f"Command: `{cmd}`. Top-1 (%) on {runner.ev.images.n:,} CIFAR-10 test images, per tensor, FP32 {fmt(fp)}.",
        "",
        md_table(["REQuant setting (per tensor)", "W4", "W3"], base + rows, "lrr"),
        "",
        f"Best W4 setting: **{best_label}**. With it: " + ", ".join(f"W{b} {fmt(w[b])}" for b in BITS) + ".",
    ]
    d8 = [runner.acc(Config("resnet20", k, 8)) for k in ("requant", "requant_sqrt")]
    d6 = [runner.acc(Config("resnet20", k, 6)) for k in ("requant", "requant_sqrt")]
    near = [x for x in d8 + d6 if x is not None]
    if fp is not None and len(near) == 4:
        lines += [
            "",
            "Targets: W8 and W6 within 0.2 points of FP32 (REQuant alpha / alpha + sqrt): "
            f"W8 {fmt(d8[0])} / {fmt(d8[1])}, W6 {fmt(d6[0])} / {fmt(d6[1])} "
            f"({'met' if min(near) >= fp - 0.2 else 'NOT met'}); W4 >= 84.0 with the best setting: "
            f"{fmt(w[4])} ({'met' if (w[4] or 0) >= 84.0 else 'NOT met'}).",
        ]
    return "\n".join(lines)


def headline(runner: Runner, cmd: str) -> str:
    """docs/headline.md: W4/W3 on both ResNets and the search-cost ratio."""
    rows = []
    for m in MODELS:
        for b in (4, 3):
            best_peer = max(
                ((runner.acc(Config(m, k, b)), k) for k in PEER_KEYS if runner.acc(Config(m, k, b)) is not None),
                default=(None, ""),
            )
            rows.append(
                [
                    f"{SHORT[m]} W{b}",
                    fmt(runner.acc(Config(m, "fp32"))),
                    fmt(runner.acc(Config(m, "minmax", b))),
                    f"{fmt(best_peer[0])} ({METHODS[best_peer[1]].label if best_peer[1] else DASH})",
                    fmt(runner.acc(Config(m, "requant", b))),
                    fmt(runner.acc(Config(m, "requant_sqrt", b))),
                ]
            )
    text = [
        "<!-- generated by benchmarks/accuracy_table.py; do not edit -->",
        "CIFAR-10 top-1 (%), weights-only per-tensor quantization of every layer of the shared ResNets "
        "(10,000 test images, activations FP32, BN not folded). Best peer = best of percentile, ACIQ, "
        "torch.ao HistogramObserver, torchao MSE observer, ModelOpt-style 39-point grid and Brevitas MSE, "
        "chosen per cell.",
        "",
        md_table(
            ["model / bits", "FP32", "min-max", "best peer", "REQuant alpha", "REQuant alpha + sqrt"],
            rows,
            "lrrlrr",
        ),
        "",
    ]
    cost = RESULTS / "search_cost_summary.json"
    if cost.is_file():
        import json

        s = json.loads(cost.read_text())
        text.append(s.get("headline", ""))
        text.append("")
    text.append(
        f"Produced by `{cmd}` (and `python benchmarks/search_cost.py` for the cost line); "
        "full tables in [docs/results.md](results.md)."
    )
    return "\n".join(text)


# --------------------------------------------------------------------------- PTQ rows


PTQ_CELLS = ((8, True), (4, True), (4, False))  # (weight bits, per channel), activations 8 bits


def ptq_configs(models: tuple[str, ...]) -> list[Config]:
    return [
        Config(m, k, b, per_channel=pc, extra=(("act_bits", 8),))
        for m in models
        for b, pc in PTQ_CELLS
        for k in ("ptq_default", "ptq_requant")
    ]


def ptq_section(runner: Runner | None, models: tuple[str, ...], cmd: str) -> str:
    """Full PTQ (weights and activations) through torchao pt2e, REQuant observers vs torchao defaults."""
    import importlib.util

    link = "[docs/observers-results.md](observers-results.md)"
    head = "## Full PTQ (W8A8, W4A8) through the observers"
    if importlib.util.find_spec("requant_plugin.pt2e") is None or runner is None:
        return (
            f"{head}\n\n`requant_plugin.pt2e` was not available when these tables were generated; the "
            f"W8A8 / W4A8 rows are in {link} (produced by `benchmarks/observers_accuracy.py`)."
        )
    cols = [(m, b, pc) for m in models for b, pc in PTQ_CELLS]
    heads = ["observers"] + [f"{SHORT[m]} W{b}A8 {'per-channel' if pc else 'per-tensor'}" for m, b, pc in cols]
    rows = [["FP32", *[fmt(runner.acc(Config(m, "fp32"))) for m, _, _ in cols]]]
    for k in ("ptq_default", "ptq_requant"):
        rows.append(
            [
                METHODS[k].label,
                *[fmt(runner.acc(Config(m, k, b, pc, extra=(("act_bits", 8),)))) for m, b, pc in cols],
            ]
        )
    return "\n".join(
        [
            head,
            "",
            f"Command: `{cmd}`. torchao pt2e (`torch.export` -> `prepare_pt2e` with the X86 Inductor "
            f"quantizer specs -> calibration on {PTQ_CALIB} seeded training images -> `convert_pt2e`), "
            "evaluated with torch on the converted graph (decomposed quantize/dequantize ops, which honour "
            "the 4-bit weight range). Weights "
            "symmetric (the backend's kernels need zero point 0), activations affine uint8. REQuant: "
            "`requant_plugin.pt2e.get_requant_quantizer(w_bits, 8, per_channel=...)` (golden search, uniform "
            "space: the sqrt grid cannot be expressed as Q/DQ); baseline: "
            "`get_torchao_default_quantization_config` on the same specs.",
            "",
            md_table(heads, rows, "l" + "r" * len(cols)),
            "",
            f"More PTQ settings (FX, other backends, activation observers alone): {link}.",
        ]
    )


# --------------------------------------------------------------------------- main


def top_settings(runner: Runner, n: int, bits: int = 4) -> list[str]:
    scored = sorted(((runner.acc(explore_config(k, bits)) or -1.0, k) for k in EXPLORE), reverse=True)
    return [k for _, k in scored[:n]]


def pick_best(runner: Runner, bits: int = 4) -> str:
    scored = [(runner.acc(explore_config(k, bits)) or -1.0, k) for k in EXPLORE]
    return max(scored)[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CI subset: ResNet-20, 1,000 images, W4/W3")
    mode.add_argument("--smoke", action="store_true", help="tiny subset: ResNet-20, 300 images, W3")
    ap.add_argument("--engine", choices=("ort", "torch"), default="ort")
    ap.add_argument("--fresh", action="store_true", help="ignore cached results")
    ap.add_argument(
        "--refresh-stale",
        action="store_true",
        help="recompute REQuant rows cached with other versions of the REQuant sources",
    )
    ap.add_argument("--out", type=Path, default=None, help="docs folder (default docs/; quick: a temp dir)")
    ap.add_argument(
        "--only",
        choices=("main", "ablation", "explore", "ptq"),
        action="append",
        help="run only these parts (default: all)",
    )
    args = ap.parse_args(argv)
    setup(0)
    argv_s = list(argv if argv is not None else sys.argv[1:])
    cmd = command("accuracy_table.py", argv_s)
    small = args.quick or args.smoke
    out_docs = args.out or (QUICK_OUT if small else DOCS)
    res_dir = out_docs if small else RESULTS
    n_img = 1000 if args.quick else 300 if args.smoke else None
    images = load_test_images(n_img, seed=0)
    runner = Runner(
        Evaluator(images, args.engine),
        ResultCache(res_dir / "accuracy.json"),
        fresh=args.fresh,
        refresh_stale=args.refresh_stale,
    )

    if small:
        models: tuple[str, ...] = ("resnet20",)
        bits: tuple[int, ...] = (4, 3) if args.quick else (3,)
        methods = (
            ("minmax", "modelopt_mse", "torchao_mse", "requant", "requant_sqrt")
            if args.quick
            else ("minmax", "requant", "requant_sqrt")
        )
        runner.run(main_configs(models, bits, methods, folded=(), per_channel=()))
        failures = 0
        if args.quick:  # the ONNX Runtime engine must agree with evaluate_accuracy
            probe = build(runner.model("resnet20"), Config("resnet20", "requant_sqrt", 4))
            a_ort, a_torch = runner.ev.accuracy(probe, "ort"), runner.ev.accuracy(probe, "torch")
            ok = abs(a_ort - a_torch) <= 0.1 + 1e-9
            failures += not ok
            print(
                f"engine check (REQuant+sqrt W4): ONNX Runtime {a_ort:.2f} vs torch {a_torch:.2f}: "
                f"{'OK' if ok else 'MISMATCH'}"
            )
        table = grid_table(runner, models, bits, methods, False, False)
        write_section(
            out_docs / "results.md",
            "accuracy",
            f"## Quick accuracy check\n\nCommand: `{cmd}`\n\n{table}",
            header=RESULTS_HEADER,
            order=RESULTS_ORDER,
        )
        print(table)
    else:
        parts = set(args.only or ("main", "ablation", "explore", "ptq"))
        models, bits = MODELS, BITS
        runner.run(full_plan(parts))
        if "explore" in parts:  # W3 for the three best W4 settings, then the winner at every width
            runner.run([explore_config(k, 3) for k in top_settings(runner, 3)])
            runner.run([explore_config(pick_best(runner), b) for b in BITS])
        write_section(out_docs / "results.md", "setup", setup_text(runner), header=RESULTS_HEADER, order=RESULTS_ORDER)
        if "main" in parts:
            write_section(
                out_docs / "results.md",
                "accuracy",
                accuracy_section(runner, models, bits, cmd),
                header=RESULTS_HEADER,
                order=RESULTS_ORDER,
            )
            (out_docs / "headline.md").write_text(headline(runner, cmd) + "\n")
        if "ablation" in parts:
            write_section(
                out_docs / "results.md",
                "ablation",
                ablation_section(runner, models, (6, 4, 3), cmd),
                header=RESULTS_HEADER,
                order=RESULTS_ORDER,
            )
        if "ptq" in parts:
            write_section(
                out_docs / "results.md",
                "ptq",
                ptq_section(runner, ("resnet20",), cmd),
                header=RESULTS_HEADER,
                order=RESULTS_ORDER,
            )
        if "explore" in parts:
            write_section(
                out_docs / "core-results.md",
                "accuracy",
                explore_section(runner, pick_best(runner), cmd),
                header=CORE_HEADER,
                order=CORE_ORDER,
            )
        failures = 0
    results = check_claims(runner, models)
    for cl, ok, notes in results:
        failures += cl.expected and not ok
        tag = ("HOLDS" if ok else "FAILS") if cl.expected else ("refuted as expected" if not ok else "NOW HOLDS")
        print(f"claim {tag}: {cl.text} [{'; '.join(notes)}]")
    if not small:
        held = [
            f"- {'holds' if ok else '**FAILS**'}: {cl.text} ({'; '.join(notes)})"
            for cl, ok, notes in results
            if cl.expected
        ]
        refuted = [
            f"- {'does not hold' if not ok else '**holds now**'}: {cl.text} ({'; '.join(notes)})"
            for cl, ok, notes in results
            if not cl.expected
        ]
        write_section(
            out_docs / "results.md",
            "claims",
            "## Ordering claims\n\nChecked on the subset by `python benchmarks/accuracy_table.py --quick` "
            "(and `--smoke` in the test suite), which exit non-zero when one fails:\n\n"
            + "\n".join(held)
            + "\n\nClaims the full tables refute (do not make them):\n\n"
            + "\n".join(refuted),
            header=RESULTS_HEADER,
            order=RESULTS_ORDER,
        )
    print(f"wrote {out_docs / 'results.md'}")
    return 1 if failures else 0


def setup_text(runner: Runner) -> str:
    """The Setup section of docs/results.md; paths in it are relative to the repository (no machine path)."""
    codes = sorted(runner.codes_used())
    note = (
        f"- REQuant rows were computed with the REQuant sources of digest {', '.join(codes)} "
        f"(digest of `requant_plugin/core`, `range.py`, `ptq/weights.py`, pt2e observers; now {CODE}; "
        "`--refresh-stale` recomputes rows whose digest differs)."
    )
    return "\n".join(
        [
            "## Setup",
            "",
            "- Models: the shared CIFAR-10 ResNet-20 (FP32 86.94 %) and ResNet-56 (88.38 %) "
            "(`../shared/models` beside the repository, or `$REQUANT_MODELS_DIR`; JPEG-domain fine-tuned, "
            "evaluated on the shared JPEG test set).",
            "- Quantization: weights only (activations FP32), every Conv/Linear layer at the same bit width, "
            "fake-quantized (dequantized FP32 weights); biases and BatchNorm stay FP32.",
            "- REQuant: `requant_plugin.quantize_weights(model, bits, space=..., per_channel=..., "
            "fold_bn=...)` "
            "with defaults (asymmetric, golden search, p = 1/2, loss in the original space, first/last layer "
            "not transformed).",
            "- Peers: `benchmarks/peers/*.py`, one adapter per family; real libraries where installable "
            "(torch.ao, torchao 0.18, Brevitas 0.13.4), re-implemented from documentation otherwise "
            "(ModelOpt's 39-candidate `mse` grid, percentile, ACIQ).",
            "- The paper's CIFAR numbers (ResNet-18/50, their own checkpoints) are not comparable "
            "cell by cell; see `../shared/reference/paper.md` section 3.",
            note,
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
