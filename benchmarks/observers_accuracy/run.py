"""Running the observer configurations of one model (FX W8A8, pt2e W4A8/W4A4, beyond weights,
weights-only diagnostics), each cached in ``benchmarks/results/observers_accuracy.json``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch

from benchmarks.harness.cache import code_digest, stale_warning
from benchmarks.harness.integrations import pt2e_configurations
from benchmarks.harness.paths import RESULTS
from benchmarks.observers_accuracy.diagnostics import weight_diagnostics
from requant_plugin.data import evaluate_accuracy
from requant_plugin.observers.flows import check_quantized, count_qdq, default_mapping, quantize_fx, quantize_pt2e
from requant_plugin.observers.scripts import load_task

CACHE = RESULTS / "observers_accuracy.json"
#: the digest of the library sources now, recorded with every newly computed result
CODE = code_digest()
PT2E_BITS = ((4, 8), (4, 4))


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_model(name: str, args: argparse.Namespace, cache: dict[str, Any]) -> dict[str, Any]:
    """Every configuration for one model (cached entries are reused)."""
    key_base = f"{name}|test={args.test_limit}|calib={args.calib_batches}x{args.batch_size}|seed={args.seed}"
    task = load_task(name, test_limit=args.test_limit, calib_batches=args.calib_batches,
                     batch_size=args.batch_size, seed=args.seed, eval_batch_size=500)
    out: dict[str, Any] = cache.setdefault(key_base, {})
    out["dataset"] = task.dataset
    out["test_images"] = sum(len(b[1]) for b in task.test)

    codes: dict[str, str] = out.setdefault("codes", {})  # key -> code_digest() it was computed with
    reused: list[str | None] = []

    fresh: set[str] = set()  # with --fresh: the cells this run computes again (the others it does not touch stay)

    def cached(key: str, fn: Any) -> Any:
        stale = key in out and codes.get(key) not in (None, CODE)
        if (key not in out or (stale and getattr(args, "refresh_stale", False)) or key in getattr(args, "refresh", ())
                or (args.fresh and key not in fresh)):
            fresh.add(key)
            t0 = time.perf_counter()
            out[key] = fn()
            codes[key] = CODE
            _progress(f"{name} {key}: {out[key]} ({time.perf_counter() - t0:.0f} s)")
            save(cache)
        else:
            reused.append(codes.get(key))
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
        pt_configs = pt2e_configurations()(wb, ab, "x86_inductor", variants=True)
        pt_configs.append(("requant_refined", "", get_requant_quantizer(wb, ab, backend="x86_inductor")))
        for cfg, _label, quantizer in pt_configs:
            def pt(quantizer: Any = quantizer, wb: int = wb, ab: int = ab,
                   refine: bool = cfg == "requant_refined") -> dict[str, Any]:
                q, sec = quantize_pt2e(task.model, quantizer, task.calibration, refine=refine)
                qdq = count_qdq(q)
                graph: Any = getattr(q, "graph")  # noqa: B009
                ranges = [list(r) for r in sorted({(int(n.args[3]), int(n.args[4])) for n in graph.nodes
                                                   if ".quantize_per_tensor." in str(n.target)})]  # as cached
                return {"acc": evaluate_accuracy(q, task.test), "calib_s": sec, "qdq": qdq,
                        "act_ranges": ranges}
            cached(f"pt2e_w{wb}a{ab}_{cfg}", pt)
    if args.only is None:
        beyond_rows(task, cached)
    if not args.skip_diagnostics and args.only is None:
        cached("weights_w4_diagnostics", lambda: weight_diagnostics(task, 4, per_layer=name == "resnet20"))
    warning = stale_warning(reused, CODE, f"{name} results",
                            "rerun with --refresh-stale to recompute those with a digest, or --fresh")
    if warning:
        print(warning, file=sys.stderr, flush=True)
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



def save(cache: dict[str, Any]) -> None:
    """Write the cache atomically."""
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    tmp = CACHE.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, default=str))
    os.replace(tmp, CACHE)
