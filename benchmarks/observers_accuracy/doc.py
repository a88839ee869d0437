"""The generated tables of docs/observers-results.md: the full comparison (section ``accuracy``,
``accuracy-quick``) and the short one-flow table of ``--only`` (``accuracy-<flow>-seed<n>``)."""

from __future__ import annotations

import argparse
import os
import platform
from typing import Any

import numpy as np
import torch

from benchmarks.observers_accuracy.run import PT2E_BITS


def environment() -> str:
    """The software and machine line of the tables."""
    import torchao

    return (f"Python {platform.python_version()}, torch {torch.__version__}, torchao {torchao.__version__}, "
            f"NumPy {np.__version__}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}")



def markdown(models: dict[str, dict[str, Any]], args: argparse.Namespace, cmd: str) -> str:
    """The full comparison: every flow and variant, acceptance checks, beyond rows, diagnostics."""
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
