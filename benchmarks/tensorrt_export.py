#!/usr/bin/env python
"""Acceptance numbers for the TensorRT Q/DQ export (CPU only: ONNX Runtime stands in for TensorRT).

For the shared CIFAR-10 ResNet-20 and ResNet-56:

* top-1 accuracy on the test set of the FP32 ONNX and of the W8A8, W4A8 (INT8 grid) and
  W4A8-sqrt (snapped) Q/DQ ONNX files in ONNX Runtime with graph optimizations off (Q/DQ run as
  written), each next to the PyTorch fake-quant accuracy (for W4-sqrt: REQuant's unsnapped
  sqrt-space weights, so the column shows what the int8 snapping costs);
* ORT vs fake-quant agreement: int8 codes compared layer by layer (teacher-forced);
* file sizes, export time, and ONNX Runtime CPU latency FP32 vs Q/DQ with ORT's optimizations on.

Writes the tables into docs/tensorrt.md (between the BENCHMARK markers) and prints them.

    python -m benchmarks.tensorrt_export            # 10,000 test images (about 10 minutes)
    python -m benchmarks.tensorrt_export --quick    # 1,000 test images, fewer latency runs
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.harness.paths import DOCS
from benchmarks.harness.runtime import command

DOC = DOCS / "tensorrt.md"
BEGIN, END = "<!-- BENCHMARK:BEGIN -->", "<!-- BENCHMARK:END -->"
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("W8A8", {"weight_bits": 8}), ("W4A8", {"weight_bits": 4}),
    ("W4A8-sqrt", {"weight_bits": 4, "space": "sqrt"}),
    # W4 weights of quantize_weights(recipe="beyond-tensorrt", fold_bn=True) on the calibration
    # images, exported as they are (weight_ranges=report)
    ("W4A8-beyond", {"weight_bits": 4, "recipe": "beyond-tensorrt"}),
]


def _torch_accuracy(model: torch.nn.Module, loader: list[Any]) -> float:
    from requant_plugin.data import evaluate_accuracy

    return evaluate_accuracy(model, loader)


def _unsnapped(reference: torch.nn.Module, model: torch.nn.Module, report: Any) -> torch.nn.Module:
    """The reference with REQuant's own fake-quant weights (no int8 snapping) instead of the file's."""
    from requant_plugin import estimate_range
    from requant_plugin.export.reference import FakeQuantLayer
    from requant_plugin.ptq import fold_bn_

    folded = copy.deepcopy(model).eval()
    fold_bn_(folded)
    out = copy.deepcopy(reference)
    mods = dict(out.named_modules())
    for w in report.weights:
        src = folded.get_submodule(w.layer).weight
        assert isinstance(src, torch.Tensor)
        src = src.detach()
        est = estimate_range(src, w.bits, symmetric=True, per_channel=w.axis is not None,
                             ch_axis=w.axis or 0, space=w.space, convention="tensorrt")
        layer = mods[w.layer]
        assert isinstance(layer, FakeQuantLayer)
        target = layer.layer.weight
        assert isinstance(target, torch.Tensor)
        with torch.no_grad():
            target.copy_(est.fake_quantize(src))
    return out


def _latency(path: Path, shape: tuple[int, ...], batch: int, runs: int) -> float:
    from requant_plugin.export.calibrate import session

    sess = session(path, optimize=True, threads=2)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)
    for _ in range(max(3, runs // 10)):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def run_model(name: str, data: Any, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from requant_plugin.export import export_onnx_qdq, ort_accuracy
    from requant_plugin.export.reference import fake_quant_reference
    from requant_plugin.export.verify import compare_with_reference
    from requant_plugin.zoo import load_model

    model = load_model(name)
    calib = data.calibration_batches(args.calib_images, 64, seed=0)
    loader = list(data.loader("test", 500, limit=args.test_images))
    fp32 = folder / f"{name}.fp32.onnx"
    res: dict[str, Any] = {"model": name, "configs": {}}
    res["fp32_torch"] = _torch_accuracy(model, loader)
    for tag, kw in CONFIGS:
        path = folder / f"{name}.{tag}.onnx"
        kw = dict(kw)
        recipe = kw.pop("recipe", None)
        t0 = time.perf_counter()
        extra: dict[str, Any] = {"fp32_path": fp32}
        src = model
        if recipe is not None:
            from requant_plugin import quantize_weights

            src, ranges = quantize_weights(model, kw["weight_bits"], recipe=recipe, fold_bn=True,
                                           calibration_data=calib)
            extra = {"weight_ranges": ranges}
        report = export_onnx_qdq(src, calib, path, progress=args.progress, **extra, **kw)
        secs = time.perf_counter() - t0
        ref = fake_quant_reference(src, report)
        tf = compare_with_reference(path, ref, data.x_test[:256])["teacher_forced"]
        row = {
            "ort": ort_accuracy(path, loader, optimize=False, threads=2, progress=args.progress),
            "fake_quant": _torch_accuracy(ref, loader),
            "size": path.stat().st_size, "export_s": secs, "codes": tf["codes"],
            "mismatch": tf["mismatch"], "unexplained": tf["unexplained"],
            "violations": len(report.violations),
            "snap_extra_rel": float(np.mean([w.snap_extra_mse / w.fq_mse for w in report.weights
                                             if w.fq_mse > 0])),
        }
        if kw.get("space") == "sqrt":
            row["fake_quant_unsnapped"] = _torch_accuracy(_unsnapped(ref, model, report), loader)
        res["configs"][tag] = row
        print(f"{name} {tag}: {json.dumps(row)}", flush=True)
    res["fp32_ort"] = ort_accuracy(fp32, loader, optimize=False, threads=2)
    res["fp32_size"] = fp32.stat().st_size
    shape = tuple(data.x_test.shape)
    res["latency"] = {}
    for batch, runs in ((1, args.runs), (64, max(5, args.runs // 10))):
        res["latency"][batch] = {
            "fp32": _latency(fp32, shape, batch, runs),
            "W8A8": _latency(folder / f"{name}.W8A8.onnx", shape, batch, runs),
        }
    return res


def tables(results: list[dict[str, Any]], args: argparse.Namespace, cmd: str) -> str:
    n = args.test_images
    lines = [
        f"Produced by `{cmd}` ({n:,} CIFAR-10 test images, {args.calib_images} calibration images "
        "from the train shards, seed 0; ONNX Runtime "
        f"{_ort_version()} CPU, 2 threads; shared 2-core machine, so timings are rough).",
        "",
        "**Accuracy (top-1 %).** ORT = the Q/DQ ONNX in ONNX Runtime with optimizations off; "
        "fake-quant = the PyTorch simulator of the same file (`fake_quant_reference`); for W4-sqrt, "
        "*unsnapped* = REQuant's own sqrt-space weights before snapping to int8; *beyond* = the W4 "
        "weights of `quantize_weights(model, 4, recipe=\"beyond-tensorrt\", fold_bn=True, calibration_data=...)` "
        "(the same calibration images) exported with `weight_ranges=report`.",
        "",
        "| model | FP32 (torch) | FP32 (ORT) | W8A8 ORT | W8A8 fake-quant | W4A8 ORT | W4A8 fake-quant "
        "| W4A8-sqrt ORT (snapped) | W4A8-sqrt fake-quant (snapped) | W4A8-sqrt unsnapped "
        "| W4A8-beyond ORT | W4A8-beyond fake-quant |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r["configs"]
        lines.append(
            f"| {r['model']} | {r['fp32_torch']:.2f} | {r['fp32_ort']:.2f} | {c['W8A8']['ort']:.2f} | "
            f"{c['W8A8']['fake_quant']:.2f} | {c['W4A8']['ort']:.2f} | {c['W4A8']['fake_quant']:.2f} | "
            f"{c['W4A8-sqrt']['ort']:.2f} | {c['W4A8-sqrt']['fake_quant']:.2f} | "
            f"{c['W4A8-sqrt']['fake_quant_unsnapped']:.2f} | {c['W4A8-beyond']['ort']:.2f} | "
            f"{c['W4A8-beyond']['fake_quant']:.2f} |"
        )
    lines += [
        "",
        "**Files and checks.** Size of the ONNX file; int8 codes compared between ORT and the "
        "fake-quant model layer by layer on 256 test images (teacher-forced; *differ* = codes one "
        "step apart at a float32 rounding tie, *unexplained* = any other difference); TensorRT "
        "rule violations; mean relative extra weight MSE of the int8 snapping.",
        "",
        "| model | config | file (bytes) | vs FP32 | export (s) | codes compared | differ | unexplained "
        "| rule violations | snap extra MSE |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['model']} | FP32 | {r['fp32_size']:,} | 1.00x | | | | | | |")
        for tag, c in r["configs"].items():
            lines.append(
                f"| {r['model']} | {tag} | {c['size']:,} | {c['size'] / r['fp32_size']:.2f}x | "
                f"{c['export_s']:.1f} | {c['codes']:,} | {c['mismatch']} | {c['unexplained']} | "
                f"{c['violations']} | {100 * c['snap_extra_rel']:+.2f}% |"
            )
    lines += [
        "",
        "**ONNX Runtime CPU latency (median ms per batch, ORT_ENABLE_ALL).** Not a TensorRT "
        "number: it only shows that the Q/DQ file runs; ORT's x86 integer kernels are not what a "
        "GPU engine does.",
        "",
        "| model | batch | FP32 | W8A8 Q/DQ | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for batch, lat in r["latency"].items():
            lines.append(f"| {r['model']} | {batch} | {lat['fp32']:.2f} | {lat['W8A8']:.2f} | "
                         f"{lat['W8A8'] / lat['fp32']:.2f}x |")
    return "\n".join(lines)


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1,000 test images, fewer latency runs")
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--calib-images", type=int, default=512)
    p.add_argument("--no-doc", action="store_true", help="print only, do not update docs/tensorrt.md")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    args.test_images = 1000 if args.quick else 10000
    args.runs = 30 if args.quick else 200
    torch.set_num_threads(2)
    torch.manual_seed(0)
    from requant_plugin.data import cifar10_available, load_cifar10

    if not cifar10_available():
        print("CIFAR-10 (shared/data/cifar10) not found: this benchmark needs it", file=sys.stderr)
        return 2
    data = load_cifar10(train_limit=5000, test_limit=args.test_images, seed=0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            results.append(run_model(name, data, args, Path(tmp)))
    cmd = command("tensorrt_export", ["--quick"] if args.quick else [])
    text = tables(results, args, cmd)
    print(text)
    if not args.no_doc and DOC.is_file():
        doc = DOC.read_text()
        if BEGIN in doc and END in doc:
            head, rest = doc.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
            print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
