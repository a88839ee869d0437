#!/usr/bin/env python
"""Full PTQ accuracy with the REQuant observers: torch.ao FX (W8A8, x86 int8) and torchao pt2e (W4A8, W4A4).

For each shared CIFAR-10 ResNet (ResNet-20 and ResNet-56, all 10,000 test images), in one run and
on the same calibration batches:

* **FX W8A8**, ``convert_fx`` lowered to x86 (real int8 kernels, converted module types checked):
  torch's default x86 qconfig mapping (``HistogramObserver`` + ``PerChannelMinMaxObserver``) vs
  ``get_requant_qconfig_mapping()``, plus the same two REQuant variants as below;
* **pt2e W4A8 and W4A4**, ``X86InductorQuantizer``, decomposed q/dq honouring the 4-bit
  ``quant_min``/``quant_max``: torchao's default observers on the same specs vs
  ``get_requant_quantizer()``, plus three REQuant variants (REQuant's plain weight MSE, rho = 0;
  REQuant activations with min-max weights; the sqrt-space weight range);
* **weights only**, W4 per channel on the BN-folded model: min-max, rho = 0, rho = 0.467 and
  the sqrt-space range, and (ResNet-20) the same per layer with the logit MSE it causes.

Results are cached per configuration in ``benchmarks/results/observers_accuracy.json`` (a rerun
resumes; ``--fresh`` ignores the cache) and written to ``docs/observers-results.md``
(section ``accuracy``, or ``accuracy-quick`` for ``--quick``: ResNet-20, 1,000 test images,
8 calibration batches).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "integrations", ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from activation_observer_speed import write_section  # noqa: E402
from fx_qconfig import check_quantized, default_mapping, load_task, quantize_fx, quiet  # noqa: E402
from pt2e_quantize import configurations, count_qdq, quantize_pt2e  # noqa: E402

from requant_plugin.data import evaluate_accuracy  # noqa: E402

DOC = ROOT / "docs" / "observers-results.md"
CACHE = ROOT / "benchmarks" / "results" / "observers_accuracy.json"
PT2E_BITS = ((4, 8), (4, 4))


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_model(name: str, args: argparse.Namespace, cache: dict[str, Any]) -> dict[str, Any]:
    """Every configuration for one model (cached entries are reused)."""
    key_base = f"{name}|test={args.test_limit}|calib={args.calib_batches}x{args.batch_size}|seed={args.seed}"
    task = load_task(name, test_limit=args.test_limit, calib_batches=args.calib_batches,
                     batch_size=args.batch_size, seed=args.seed, eval_batch_size=500)
    if args.fresh:  # this model and calibration sample only; other cached runs stay
        cache.pop(key_base, None)
    out: dict[str, Any] = cache.setdefault(key_base, {})
    out["dataset"] = task.dataset
    out["test_images"] = sum(len(b[1]) for b in task.test)

    def cached(key: str, fn: Any) -> Any:
        if key not in out:
            t0 = time.perf_counter()
            out[key] = fn()
            _progress(f"{name} {key}: {out[key]} ({time.perf_counter() - t0:.0f} s)")
            save(cache)
        return out[key]

    cached("fp32", lambda: evaluate_accuracy(task.model, task.test))
    from requant_plugin import get_requant_qconfig_mapping

    fx_configs = (
        ("default", default_mapping("x86")),
        ("requant", get_requant_qconfig_mapping()),
        ("requant_mse", get_requant_qconfig_mapping(weight_input_mean_ratio=0.0)),
        ("requant_w_minmax", get_requant_qconfig_mapping(weight_search="minmax")),
        ("requant_w_sqrt", get_requant_qconfig_mapping(weight_space="sqrt", weight_input_mean_ratio=0.0)),
        ("requant_exact", get_requant_qconfig_mapping(act_sample_size=None)),
        ("requant_refined", get_requant_qconfig_mapping()),
    )
    for cfg, mapping in fx_configs if args.only in (None, "fx") else ():
        def fx(mapping: Any = mapping, refine: bool = cfg == "requant_refined") -> dict[str, Any]:
            q, sec = quantize_fx(task.model, mapping, task.calibration, "x86", refine=refine)
            n_int8 = check_quantized(q)
            kinds = sorted({type(m).__name__ for m in q.modules() if "quantized" in type(m).__module__})
            return {"acc": evaluate_accuracy(q, task.test), "calib_s": sec, "int8_layers": n_int8,
                    "module_types": kinds}
        cached(f"fx_w8a8_{cfg}", fx)
    pt2e_bits = PT2E_BITS if args.only in (None, "pt2e") else ()
    if pt2e_bits:
        from requant_plugin.pt2e import get_requant_quantizer
    for wb, ab in pt2e_bits:
        pt_configs = configurations(wb, ab, "x86_inductor", variants=True)
        pt_configs.append(("requant_refined", "", get_requant_quantizer(wb, ab, backend="x86_inductor")))
        for cfg, _label, quantizer in pt_configs:
            def pt(quantizer: Any = quantizer, wb: int = wb, ab: int = ab,
                   refine: bool = cfg == "requant_refined") -> dict[str, Any]:
                q, sec = quantize_pt2e(task.model, quantizer, task.calibration, refine=refine)
                qdq = count_qdq(q)
                graph: Any = getattr(q, "graph")  # noqa: B009
                ranges = sorted({(int(n.args[3]), int(n.args[4])) for n in graph.nodes
                                 if ".quantize_per_tensor." in str(n.target)})
                return {"acc": evaluate_accuracy(q, task.test), "calib_s": sec, "qdq": qdq,
                        "act_ranges": ranges}
            cached(f"pt2e_w{wb}a{ab}_{cfg}", pt)
    if args.only is None:
        beyond_rows(task, cached)
    if not args.skip_diagnostics and args.only is None:
        cached("weights_w4_diagnostics", lambda: weight_diagnostics(task, 4, per_layer=name == "resnet20"))
    return out


def beyond_rows(task: Any, cached: Any) -> None:
    """W4 weights from ``quantize_weights(recipe=..., fold_bn=True)`` on the calibration batches,
    carried into the observers with ``weight_ranges=report`` (pinned grids): FX x86 int8 kernels
    (asymmetric per-channel ``"beyond"``) and pt2e W4A8 / W4A4 (symmetric ``"beyond-tensorrt"``)."""
    from requant_plugin import get_requant_qconfig_mapping, quantize_weights
    from requant_plugin.pt2e import get_requant_quantizer

    def weights(recipe: str) -> tuple[torch.nn.Module, Any, float]:
        t0 = time.perf_counter()
        qm, rep = quantize_weights(task.model, 4, recipe=recipe, fold_bn=True, calibration_data=task.calibration)
        return qm, rep, time.perf_counter() - t0

    for wb in (4, 8):
        def fx(wb: int = wb) -> dict[str, Any]:
            t0 = time.perf_counter()
            qm, rep = quantize_weights(task.model, wb, recipe="beyond", fold_bn=True,
                                       calibration_data=task.calibration)
            w_s = time.perf_counter() - t0
            q, sec = quantize_fx(qm, get_requant_qconfig_mapping(weight_bits=wb, weight_ranges=rep),
                                 task.calibration, "x86")
            return {"acc": evaluate_accuracy(q, task.test), "calib_s": sec + w_s, "int8_layers": check_quantized(q)}
        cached(f"fx_w{wb}a8_beyond", fx)
    for ab in (8, 4):
        def pt(ab: int = ab) -> dict[str, Any]:
            qm, rep, w_s = weights("beyond-tensorrt")
            q, sec = quantize_pt2e(qm, get_requant_quantizer(4, ab, weight_ranges=rep), task.calibration)
            return {"acc": evaluate_accuracy(q, task.test), "calib_s": sec + w_s, "qdq": count_qdq(q)}
        cached(f"pt2e_w4a{ab}_beyond", pt)


def _fake_quant_weights(model: torch.nn.Module, make_observer: Any) -> tuple[torch.nn.Module, float]:
    """Per-channel fake quantization of every Conv/Linear weight of ``model`` (a copy) with the
    observer ``make_observer()``; returns the copy and the summed per-layer weight MSE."""
    from requant_plugin.ptq import quantizable_layers

    out = copy.deepcopy(model)
    total = 0.0
    for _name, mod in quantizable_layers(out):
        obs = make_observer()
        weight: Any = mod.weight
        w = weight.detach()
        obs(w)
        scale, zp = obs.calculate_qparams()
        wq = torch.fake_quantize_per_channel_affine(w, scale.float(), zp.int(), 0, obs.quant_min, obs.quant_max)
        total += float(((wq - w) ** 2).mean())
        with torch.no_grad():
            weight.copy_(wq)
    return out, total


def weight_diagnostics(task: Any, bits: int = 4, per_layer: bool = True) -> dict[str, Any]:
    """Weights-only W``bits`` per-channel symmetric fake quantization of the BN-folded model:
    accuracy and weight MSE of min-max, REQuant (uniform) and the sqrt-space range, and per layer
    (one layer quantized at a time) the output (logit) MSE on 500 test images."""
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    from requant_plugin._observer_base import RELU_MEAN_RATIO
    from requant_plugin.observers import PerChannelREQuantObserver
    from requant_plugin.ptq import fold_bn_, quantizable_layers

    folded = copy.deepcopy(task.model).eval()
    fold_bn_(folded)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    kw = {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric, "quant_min": lo, "quant_max": hi}
    makers = {
        "minmax": lambda: PerChannelMinMaxObserver(**kw),
        "requant": lambda: PerChannelREQuantObserver(**kw),
        "requant_sqrt": lambda: PerChannelREQuantObserver(space="sqrt", **kw),
        "requant_coherent": lambda: PerChannelREQuantObserver(input_mean_ratio=RELU_MEAN_RATIO, **kw),
    }
    res: dict[str, Any] = {"bits": bits}
    for key, make in makers.items():
        model, wmse = _fake_quant_weights(folded, make)
        res[key] = {"acc": evaluate_accuracy(model, task.test), "weight_mse": wmse}
    if per_layer:
        x = torch.cat([b[0] for b in task.test])[:500]
        with torch.no_grad():
            ref = folded(x)
        rows = []
        for name, _ in quantizable_layers(folded):
            row: dict[str, Any] = {"layer": name}
            for key in ("minmax", "requant", "requant_coherent"):
                one = copy.deepcopy(folded)
                mod: Any = one.get_submodule(name)
                obs = makers[key]()
                obs(mod.weight.detach())
                scale, zp = obs.calculate_qparams()
                with torch.no_grad():
                    wq = torch.fake_quantize_per_channel_affine(mod.weight, scale.float(), zp.int(), 0, lo, hi)
                    row[f"{key}_wmse"] = float(((wq - mod.weight) ** 2).mean())
                    mod.weight.copy_(wq)
                    row[f"{key}_out_mse"] = float(((one(x) - ref) ** 2).mean())
            rows.append(row)
        res["layers"] = rows
    return res


def save(cache: dict[str, Any]) -> None:
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    tmp = CACHE.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, default=str))
    os.replace(tmp, CACHE)


def markdown(models: dict[str, dict[str, Any]], args: argparse.Namespace, cmd: str) -> str:
    variants = ("requant_mse", "requant_w_minmax", "requant_w_sqrt", "requant_exact", "requant_refined")
    lines = [
        f"Command: `{cmd}`  ",
        f"Calibration: {args.calib_batches} seeded batches of {args.batch_size} training images, the same "
        f"for every configuration. {environment()}.",
        "",
        "REQuant = the factories' defaults (`get_requant_qconfig_mapping()`, `get_requant_quantizer(wb, ab)`): "
        "REQuant activations, weights searched with the coherent output-error term (rho = 0.467). "
        "Variants: rho = 0 (REQuant's plain weight MSE), REQuant activations with min-max weights "
        "(`weight_search=\"minmax\"`), the sqrt-space weight range (`weight_space=\"sqrt\"`, rho = 0), "
        "and (FX) exact activation histograms (`act_sample_size=None`: every value binned) and the factory "
        "default followed by `refine_activation_ranges` (one activation range factor fitted on the "
        "calibration batches' output error).",
        "",
        "| model | flow | bits | FP32 | torch default | REQuant | REQuant - default | REQuant - FP32 "
        "| rho = 0 | acts + min-max weights | sqrt-space weights | exact act. histograms | refined act. ranges |",
        "| :--- | :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    checks = []
    for name, r in models.items():
        fp32 = r["fp32"]
        rows = [("FX convert_fx, x86 int8", "W8A8", "fx_w8a8")]
        rows += [("pt2e X86Inductor, decomposed q/dq", f"W{wb}A{ab}", f"pt2e_w{wb}a{ab}") for wb, ab in PT2E_BITS]
        for flow, bits, prefix in rows:
            d, q = r[f"{prefix}_default"]["acc"], r[f"{prefix}_requant"]["acc"]
            ex = []
            for v in variants:
                e = r.get(f"{prefix}_{v}", {}).get("acc")
                ex.append("n/a" if e is None else f"{e:.2f} ({e - d:+.2f})")
            lines.append(f"| {name} ({r['test_images']} images) | {flow} | {bits} | {fp32:.2f} | {d:.2f} "
                         f"| **{q:.2f}** | {q - d:+.2f} | {q - fp32:+.2f} | " + " | ".join(ex) + " |")
            if prefix == "fx_w8a8":
                refined = r.get(f"{prefix}_requant_refined", {}).get("acc")
                also = ("" if refined is None else f"; with `refine_activation_ranges` {refined - fp32:+.2f} vs FP32, "
                        f"{refined - d:+.2f} vs default ({'met' if refined >= d else 'NOT met'})")
                checks.append(f"{name} W8A8 FX: REQuant {q - fp32:+.2f} vs FP32 (target >= -0.50: "
                              f"{'met' if q - fp32 >= -0.5 else 'NOT met'}), {q - d:+.2f} vs default "
                              f"(target >= 0: {'met' if q >= d else 'NOT met'}){also}; converted modules "
                              f"{', '.join(r[f'{prefix}_requant']['module_types'])}")
            else:
                checks.append(f"{name} {bits} pt2e: REQuant {q - d:+.2f} vs default (target > 0: "
                              f"{'met' if q > d else 'NOT met'}); activation (quant_min, quant_max) in the "
                              f"graph {r[f'{prefix}_requant']['act_ranges']}")
    lines += ["", "Acceptance checks:", ""] + [f"- {c}" for c in checks]
    lines += ["", "W4 weights from `quantize_weights(model, 4, recipe=..., fold_bn=True, calibration_data=<the same "
              "batches>)` carried into the observers with `weight_ranges=report` (pinned per-channel grids, REQuant "
              "activations); the pt2e columns to compare are the factories' rows above. FX: `\"beyond\"` "
              "(asymmetric) through `convert_fx` with real x86 int8 kernels; pt2e: `\"beyond-tensorrt\"` "
              "(symmetric, as both pt2e backends need):", "",
              "| model | FP32 | FX x86 int8, W8A8: default / REQuant / beyond | FX x86 int8, W4A8 beyond "
              "| pt2e W4A8: default / REQuant / beyond | pt2e W4A4: default / REQuant / beyond |",
              "| :--- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in models.items():
        if "fx_w4a8_beyond" not in r:
            continue
        fp32 = r["fp32"]
        cells = [f"{r['fx_w8a8_default']['acc']:.2f} / {r['fx_w8a8_requant']['acc']:.2f} / "
                 f"**{r['fx_w8a8_beyond']['acc']:.2f}**",
                 f"{r['fx_w4a8_beyond']['acc']:.2f} ({r['fx_w4a8_beyond']['acc'] - fp32:+.2f})"]
        for ab in (8, 4):
            p = f"pt2e_w4a{ab}"
            cells.append(f"{r[p + '_default']['acc']:.2f} / {r[p + '_requant']['acc']:.2f} / "
                         f"**{r[p + '_beyond']['acc']:.2f}**")
        lines.append(f"| {name} | {fp32:.2f} | " + " | ".join(cells) + " |")
    keys = ("minmax", "requant", "requant_coherent", "requant_sqrt")
    lines += ["", "Weights only, W4 per-channel symmetric (`-8..7`), BN folded, activations FP32 (same test "
              "images): top-1 % (summed per-layer weight MSE):", "",
              "| model | min-max | REQuant, plain weight MSE (rho = 0) | REQuant, coherent term (rho = 0.467) "
              "| sqrt-space range (rho = 0) |", "| :--- | ---: | ---: | ---: | ---: |"]
    for name, r in models.items():
        diag = r.get("weights_w4_diagnostics")
        if diag:
            cells = [f"{diag[k]['acc']:.2f} ({diag[k]['weight_mse']:.3g})" if k in diag else "n/a" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, r in models.items():
        layers = (r.get("weights_w4_diagnostics") or {}).get("layers")
        if not layers:
            continue
        lower_w = sum(lr["requant_wmse"] < lr["minmax_wmse"] for lr in layers)
        worse_out = sum(lr["requant_wmse"] < lr["minmax_wmse"] and lr["requant_out_mse"] > lr["minmax_out_mse"]
                        for lr in layers)
        coh_better = sum(lr["requant_coherent_out_mse"] < lr["requant_out_mse"] for lr in layers)
        lines += ["", f"{name}, one layer at a time at W4 (logit MSE against FP32 on 500 test images): the plain "
                  f"weight MSE (rho = 0) lowers the weight MSE in {lower_w}/{len(layers)} layers, yet raises the "
                  f"output MSE in {worse_out} of them; the coherent term lowers the output MSE against rho = 0 in "
                  f"{coh_better}/{len(layers)} layers.", "",
                  "| layer | weight MSE min-max | weight MSE rho = 0 | weight MSE rho = 0.467 | logit MSE min-max "
                  "| logit MSE rho = 0 | logit MSE rho = 0.467 |",
                  "| :--- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {lr['layer']} | {lr['minmax_wmse']:.3g} | {lr['requant_wmse']:.3g} | "
                  f"{lr['requant_coherent_wmse']:.3g} | {lr['minmax_out_mse']:.4f} | {lr['requant_out_mse']:.4f} | "
                  f"{lr['requant_coherent_out_mse']:.4f} |" for lr in layers]
    lines += ["", "Calibration seconds (FX W8A8 default / REQuant; pt2e W4A4 default / REQuant):", ""]
    for name, r in models.items():
        lines.append(f"- {name}: FX {r['fx_w8a8_default']['calib_s']:.1f} / {r['fx_w8a8_requant']['calib_s']:.1f} s; "
                     f"pt2e {r['pt2e_w4a4_default']['calib_s']:.1f} / {r['pt2e_w4a4_requant']['calib_s']:.1f} s")
    return "\n".join(lines)


def short_markdown(models: dict[str, dict[str, Any]], args: argparse.Namespace, cmd: str) -> str:
    """One row per model and bit width of the flow in ``--only`` (FP32, default, REQuant, variants)."""
    lines = [f"Command: `{cmd}` (calibration seed {args.seed}, {args.calib_batches} batches of {args.batch_size})",
             "", "| model | bits | FP32 | torch default | REQuant | REQuant - default | rho = 0 "
             "| acts + min-max weights | sqrt-space weights |",
             "| :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    prefixes = [("W8A8", "fx_w8a8")] if args.only == "fx" else [(f"W{w}A{a}", f"pt2e_w{w}a{a}") for w, a in PT2E_BITS]
    for name, r in models.items():
        for bits, prefix in prefixes:
            d, q = r[f"{prefix}_default"]["acc"], r[f"{prefix}_requant"]["acc"]
            ex = [f"{r[f'{prefix}_{v}']['acc']:.2f}" for v in ("requant_mse", "requant_w_minmax", "requant_w_sqrt")]
            lines.append(f"| {name} | {bits} | {r['fp32']:.2f} | {d:.2f} | **{q:.2f}** | {q - d:+.2f} | "
                         + " | ".join(ex) + " |")
    return "\n".join(lines)


FX_VARIANTS = (("default", "torch default"), ("requant", "REQuant"), ("requant_exact", "REQuant, exact histograms"),
               ("requant_refined", "REQuant + refined act. ranges"), ("requant_mse", "rho = 0"),
               ("requant_w_minmax", "acts + min-max weights"), ("requant_w_sqrt", "sqrt-space weights"))


def _sd(v: np.ndarray) -> float:
    """Sample standard deviation (0 for a single value)."""
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def _paired(a: np.ndarray, b: np.ndarray) -> str:
    """``a - b`` over paired samples: mean, SD, standard error of the mean, and how often ``a >= b``."""
    d = a - b
    return (f"{d.mean():+.3f} points on average (SD {_sd(d):.3f}, standard error {_sd(d) / np.sqrt(len(d)):.3f}); "
            f"at or above on {int(np.sum(d >= 0))} of {len(d)} samples")


def seeds_markdown(runs: dict[int, dict[str, dict[str, Any]]], cmd: str) -> str:
    """FX W8A8 over several calibration samples: per seed and model the accuracy of every
    configuration, then per model the mean (SD over seeds) and the paired difference
    REQuant - default (mean, SD, standard error of the mean, seeds with REQuant >= default)."""
    seeds = sorted(runs)
    names = list(runs[seeds[0]])
    first = runs[seeds[0]]
    images = ", ".join(sorted({f"{first[n]['test_images']:,}" for n in names if "test_images" in first[n]}))
    lines = [f"Command: `{cmd}` (calibration seeds {', '.join(map(str, seeds))}, each the same for every "
             f"configuration of that seed; test images per model: {images or 'n/a'})", "",
             "| model | seed | FP32 | " + " | ".join(label for _, label in FX_VARIANTS) + " | REQuant - default |",
             "| :--- | :--- | ---: | " + " | ".join("---:" for _ in FX_VARIANTS) + " | ---: |"]
    summary = []
    for name in names:
        acc = {key: np.array([runs[s][name][f"fx_w8a8_{key}"]["acc"] for s in seeds]) for key, _ in FX_VARIANTS}
        fp32 = runs[seeds[0]][name]["fp32"]
        for i, seed in enumerate(seeds):
            diff = acc["requant"][i] - acc["default"][i]
            lines.append(f"| {name} | {seed} | {fp32:.2f} | " + " | ".join(
                f"{'**' if key == 'requant' else ''}{acc[key][i]:.2f}{'**' if key == 'requant' else ''}"
                for key, _ in FX_VARIANTS) + f" | {diff:+.2f} |")
        d = acc["requant"] - acc["default"]
        lines.append(f"| {name} | mean (SD) | {fp32:.2f} | " + " | ".join(
            f"{acc[key].mean():.2f} ({_sd(acc[key]):.2f})" for key, _ in FX_VARIANTS)
            + f" | {d.mean():+.2f} ({_sd(d):.2f}) |")
        summary.append(f"{name}: REQuant - default {_paired(acc['requant'], acc['default'])}; REQuant - FP32 "
                       f"{acc['requant'].mean() - fp32:+.2f} on average (worst {acc['requant'].min() - fp32:+.2f})")
        summary.append(f"{name}: exact histograms (`act_sample_size=None`) - default "
                       f"{_paired(acc['requant_exact'], acc['default'])}")
        summary.append(f"{name}: REQuant + refined activation ranges (`refine_activation_ranges`) - default "
                       f"{_paired(acc['requant_refined'], acc['default'])}")
    return "\n".join(lines + [""] + [f"- {line}" for line in summary])


SEEDS_PNG = ROOT / "docs" / "img" / "observers_w8a8_seeds.png"


def plot_seeds(runs: dict[int, dict[str, dict[str, Any]]], path: Path = SEEDS_PNG) -> Path:
    """FX W8A8 top-1 per calibration seed (dots) and mean (bar) for torch's default, REQuant,
    REQuant with exact histograms and with refined activation ranges, one panel per model, FP32
    as a dashed line."""
    from requant_plugin.plots import new_figure, save_figure

    seeds = sorted(runs)
    names = list(runs[seeds[0]])
    keys = (("default", "torch default"), ("requant", "REQuant"), ("requant_exact", "REQuant,\nexact hist."),
            ("requant_refined", "REQuant,\nrefined ranges"))
    fig = new_figure(5.2 * len(names), 3.4)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        for j, (key, _label) in enumerate(keys):
            acc = np.array([runs[s][name][f"fx_w8a8_{key}"]["acc"] for s in seeds])
            ax.scatter(np.full(len(acc), j) + np.linspace(-0.15, 0.15, len(acc)), acc, s=14, zorder=3)
            ax.hlines(acc.mean(), j - 0.3, j + 0.3, colors="k", linewidth=2, zorder=4)
            ax.text(j + 0.32, acc.mean(), f"{acc.mean():.2f}", va="center", fontsize=8)
        ax.axhline(runs[seeds[0]][name]["fp32"], color="gray", linestyle="--", linewidth=1, label="FP32")
        ax.set_xticks(range(len(keys)), [label for _, label in keys], fontsize=8)
        ax.set_xlim(-0.5, len(keys) - 0.2)
        ax.margins(y=0.12)
        ax.set_title(f"{name}: FX W8A8, {len(seeds)} calibration seeds", fontsize=9)
        ax.set_ylabel("top-1 % (10,000 test images)" if i == 0 else "")
        ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def environment() -> str:
    import torchao

    return (f"Python {platform.python_version()}, torch {torch.__version__}, torchao {torchao.__version__}, "
            f"NumPy {np.__version__}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="ResNet-20, 1,000 test images, 8 calibration batches")
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="recompute this run's cached results")
    p.add_argument("--skip-diagnostics", action="store_true", help="skip the weights-only W4 diagnostics")
    p.add_argument("--only", choices=("fx", "pt2e"), default=None,
                   help="one flow only (a short table in its own section, e.g. for other --seed values)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="with --only fx: every listed calibration seed (cached runs reused) and a summary "
                        "over them (section accuracy-fx-seeds)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.seeds is not None and args.only != "fx":
        p.error("--seeds summarises the FX W8A8 comparison: add --only fx")
    if args.quick:
        args.models, args.test_limit, args.calib_batches = ["resnet20"], 1000, 8
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    quiet()
    cache: dict[str, Any] = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    argv_s = " ".join(sys.argv[1:] if argv is None else argv)
    cmd = f"python benchmarks/observers_accuracy.py {argv_s}".strip()
    if args.seeds is not None:
        runs = {}
        for seed in args.seeds:
            args_s = argparse.Namespace(**{**vars(args), "seed": seed})
            torch.manual_seed(seed)
            runs[seed] = {name: run_model(name, args_s, cache) for name in args.models}
        md = seeds_markdown(runs, cmd)
        print(md)
        if not args.no_write:
            png = plot_seeds(runs)
            write_section(DOC, "accuracy-fx-seeds",
                          md + f"\n\n![FX W8A8 per calibration seed](img/{png.name})")
        return 0
    models = {name: run_model(name, args, cache) for name in args.models}
    if args.only is not None:
        md = short_markdown(models, args, cmd)
        section = f"accuracy-{args.only}-seed{args.seed}"
    else:
        md = markdown(models, args, cmd)
        section = "accuracy-quick" if args.quick else "accuracy"
    print(md)
    if not args.no_write:
        write_section(DOC, section, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
