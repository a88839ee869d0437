"""The main job: load, quantize, evaluate, tabulate, plot and export.

:func:`run_pipeline` does, in order:

1. load the data set and the float model (:mod:`.workload`);
2. optionally calibrate activation histograms on ``calib_images`` train images (also the
   calibration data of the recipe row and of the export);
3. evaluate FP32, then for every bit width the min-max baseline (``alpha = 1``), REQuant's
   alpha search on the uniform grid and, with ``space="sqrt"``, REQuant with the
   sign(w)*sqrt|w| transform and, with ``recipe``, that recipe on the calibration images (weights
   fake-quantized, activations FP32 unless ``act_bits``);
4. build the per-layer table and the ``L(alpha)`` curves at the lowest bit width;
5. optionally export the TensorRT-ready ONNX and verify it (:mod:`.export_step`);
6. optionally write the report folder (:mod:`.report`).

Progress and tables go through ``log`` (``print`` by default); progress bars go to stderr.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn
from tqdm.auto import tqdm

from ..data import evaluate_accuracy
from ..options import MAX_BITS, MIN_BITS, Space, check_bits
from ..ptq import (
    QuantizationReport,
    first_last,
    fold_bn_,
    layer_space,
    mixed_precision_bits,
    quantizable_layers,
    quantize_weights,
)
from .baselines import (
    ActQParams,
    activation_qparams,
    calibrate_activations,
    end_widths,
    fake_quant_activations,
    minmax_quantize_weights,
)
from .config import LayerRow, PipelineConfig, PipelineResult
from .curves import AlphaCurve, alpha_curve, pick_curve_layers
from .errors import UsageError, require_module
from .export_step import export_and_verify
from .report import write_report
from .tables import accuracy_table, layer_table, setting_line, width_line
from .workload import load_workload

__all__ = ["accuracy_table", "layer_table", "run_pipeline"]  # the tables live in .tables

Log = Callable[[str], None]


def _check_config(cfg: PipelineConfig) -> None:
    if not cfg.bits:
        raise UsageError("give at least one bit width with --bits")
    extra = [b for b in (cfg.act_bits, cfg.end_bits, cfg.export_bits) if b is not None]
    for b in (*cfg.bits, *extra):
        try:
            check_bits(b)
        except ValueError:
            raise UsageError(f"bit width {b} is not supported: use {MIN_BITS}..{MAX_BITS}") from None
    try:
        Space.parse(cfg.space)
    except ValueError:
        raise UsageError(f"unknown --space {cfg.space!r}: use 'uniform' or 'sqrt'") from None
    if cfg.recipe is not None:
        try:
            cfg.recipe_config(cfg.main_bits)
        except ValueError as exc:
            raise UsageError(f"--recipe {cfg.recipe}: {exc}") from None
    if cfg.mixed_precision and cfg.recipe is None:
        raise UsageError("--mixed-precision quantizes with a recipe at the chosen widths: add --recipe (e.g. "
                         "--recipe beyond)")
    if cfg.mixed_precision and cfg.end_bits is not None:
        raise UsageError("--mixed-precision chooses every layer's width and --end-bits fixes the first and last "
                         "layers': use one of them")
    if cfg.calib_images < 1:
        raise UsageError("--calib-images must be at least 1")
    if cfg.test_limit is not None and cfg.test_limit < 1:
        raise UsageError("--test-limit must be at least 1")
    # Fail fast, before minutes of work, when an optional extra is missing or an output is unwritable.
    if cfg.report is not None:
        require_module("matplotlib", "--report (PNG plots)")
        _check_writable(cfg.report, "--report", folder=True)
    if cfg.export is not None:
        for module in ("onnx", "onnxruntime"):
            require_module(module, "--export (ONNX for TensorRT)")
        require_module("requant_plugin.export", "--export (ONNX for TensorRT)")
        _check_writable(cfg.export, "--export", folder=False)


def _check_writable(path: str, option: str, *, folder: bool) -> None:
    """Raise :class:`UsageError` (path + fix) unless ``path`` (a folder, or a file's folder) can be
    created and written; creates nothing."""
    target = Path(path)
    fix = f"choose a writable location for {option}"
    if folder and target.is_file():
        raise UsageError(f"{option} {path} is an existing file, not a folder; {fix}")
    if not folder and target.is_dir():
        raise UsageError(f"{option} {path} is an existing folder, not a file; {fix}")
    probe = target if folder else target.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"cannot write {option} {path}: {probe} is a file, not a folder; {fix}")
    try:  # a real write: os.access says yes to root even where writes fail (/proc, read-only mounts)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {option} {path}: {probe} is not writable "
                         f"({exc.strerror or exc}); {fix}") from exc
    if target.exists() and not folder and not os.access(target, os.W_OK):
        raise UsageError(f"cannot write {option} {path}: the file is read-only; {fix}")


def _layer_rows(report: QuantizationReport, minmax_mse: dict[str, float]) -> list[LayerRow]:
    return [
        LayerRow(x.name, x.shape, x.space, x.alpha, minmax_mse.get(x.name, float("nan")), x.mse,
                 x.evaluations)
        for x in report.layers
    ]


def run_pipeline(cfg: PipelineConfig, log: Log = print) -> PipelineResult:
    """Run the whole job for ``cfg``; see the module docstring. Raises UsageError on bad input."""
    _check_config(cfg)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    log("[1/5] data and model")
    work = load_workload(cfg.data, cfg.model, cfg.weights, test_limit=cfg.test_limit,
                         train_limit=cfg.train_limit, train_epochs=cfg.train_epochs, seed=cfg.seed, log=log)
    log(f"      data : {work.data_label}")
    log(f"      model: {work.model_source}")
    for note in work.notes:
        log(f"      note : {note}")
    base = copy.deepcopy(work.model).eval()
    if cfg.fold_bn:
        fold_bn_(base)
    seconds["load"] = time.perf_counter() - t0

    loader = work.dataset.loader("test", batch_size=500)
    n_calib = min(cfg.calib_images, len(work.dataset.y_train))
    calib = work.dataset.calibration_batches(n_calib, batch_size=64, seed=cfg.seed) \
        if (cfg.act_bits or cfg.export or cfg.recipe) else []
    act_qp: dict[str, dict[str, ActQParams]] = {}
    if cfg.act_bits:
        t1 = time.perf_counter()
        log(f"      calibrating activation ranges on {n_calib} train images (A{cfg.act_bits})")
        hists = calibrate_activations(base, calib, progress=cfg.progress)
        ends = end_widths(base, cfg.end_bits)
        act_qp = {m: activation_qparams(hists, cfg.act_bits, "minmax" if m == "minmax" else "requant", widths=ends)
                  for m in cfg.methods}
        seconds["calibrate"] = time.perf_counter() - t1

    def evaluate(model: nn.Module, method: str | None) -> float:
        qp = act_qp.get(method) if method else None
        with fake_quant_activations(model, qp):
            return evaluate_accuracy(model, loader)

    t2 = time.perf_counter()
    log(f"[2/5] quantize weights and evaluate top-1 on {len(work.dataset.y_test):,} test images")
    log(f"      {setting_line(cfg)}")
    fp32 = evaluate(base, None)
    log(f"      FP32: {fp32:.2f}%")
    accuracy: dict[int, dict[str, float]] = {}
    layers: list[LayerRow] = []
    widths: dict[int, dict[str, int]] = {}
    all_bits = sorted(set(cfg.bits), reverse=True)
    bar = tqdm(total=len(all_bits) * len(cfg.methods), desc="quantize + evaluate", unit="run",
               disable=not cfg.progress)
    for bits in all_bits:
        accuracy[bits] = {}
        mm_model, mm_mse = minmax_quantize_weights(base, bits, symmetric=cfg.symmetric,
                                                   per_channel=cfg.per_channel, end_bits=cfg.end_bits)
        accuracy[bits]["minmax"] = evaluate(mm_model, "minmax")
        bar.update()
        for method in cfg.methods[1:]:
            space = "sqrt" if method == "requant_sqrt" else "uniform"
            if method == "recipe_mixed":
                widths[bits] = mixed_precision_bits(base, calib, float(bits), seed=cfg.seed, progress=cfg.progress,
                                                     symmetric=cfg.recipe_config(bits).symmetric)
                bar.clear()
                log(f"      W{bits} mixed precision: {width_line(base, widths[bits])}")
                bar.refresh()
            if method.startswith("recipe"):
                row = cfg.recipe_config(bits, widths[bits] if method == "recipe_mixed" else None)
                q_model, report = quantize_weights(base, row, calibration_data=calib)
            else:
                q_model, report = quantize_weights(base, cfg.quantize_config(bits, space))
            accuracy[bits][method] = evaluate(q_model, method)
            bar.update()
            if not method.startswith("recipe") and bits == cfg.main_bits and space == cfg.space:
                layers = _layer_rows(report, mm_mse)
        cells = ", ".join(f"{cfg.label(m)} {accuracy[bits][m]:.2f}%" for m in cfg.methods)
        bar.clear()
        log(f"      W{bits}: {cells}")
        bar.refresh()
    bar.close()
    seconds["quantize_and_evaluate"] = time.perf_counter() - t2
    assert layers, "the main bit width produced no per-layer rows"

    log(f"[3/5] per-layer results at W{cfg.main_bits} ({cfg.space} grid)")
    curves = _curves(base, cfg)
    result = PipelineResult(cfg, work.model_name, work.model_source, work.data_label, work.notes, fp32,
                            accuracy, layers, curves, widths=widths, seconds=seconds)
    log(layer_table(layers))
    log("")
    log("[4/5] top-1 accuracy (%)")
    log(accuracy_table(result))
    for note in work.notes:
        log(f"      ({note})")
    log("")
    if cfg.export is not None:
        t3 = time.perf_counter()
        log(f"[5/5] export W{cfg.export_weight_bits}A8 ONNX for TensorRT -> {cfg.export}")
        result.export = export_and_verify(work.model, calib, loader, cfg, log, widths.get(cfg.export_weight_bits))
        seconds["export"] = time.perf_counter() - t3
    else:
        log("[5/5] export: skipped (add --export model.onnx for a TensorRT-ready ONNX)")
    seconds["total"] = time.perf_counter() - t0
    if cfg.report is not None:
        result.files = write_report(result, cfg.report)
        log(f"report: {result.files[0]} ({len(result.files)} files)")
    return result


def _curves(base: nn.Module, cfg: PipelineConfig) -> list[AlphaCurve]:
    layers = quantizable_layers(base)
    names = [n for n, _ in layers]
    modules = dict(layers)
    ends = first_last(names)
    out = []
    for name in pick_curve_layers(names):
        space = layer_space(name, cfg.space, ends)
        out.append(alpha_curve(modules[name], name, cfg.main_bits, space, symmetric=cfg.symmetric,
                               per_channel=cfg.per_channel))
    return out
