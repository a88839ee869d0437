"""ImageNet-size cost of the TensorRT Q/DQ export (issue 17, section 3), per phase.

For each architecture (random init, ``benchmarks.archs``; default ResNet-50 and RegNet-X-400MF) at
224x224 with ``--images`` seeded random calibration images (default 256, batches of 32), 2 torch
threads, one run each:

* ``export_onnx_qdq(model, images, path)`` (W8A8), split into the FP32 ONNX export
  (``load_fp32``), the weight ranges (``quantize_plan_weights``), the activation calibration
  (``collect_histograms``: ONNX Runtime over the calibration images) and the rest (activation
  ranges, Q/DQ insertion, checks, writing);
* ``verify_export(report, model=..., images=...)``: onnx checker, TensorRT rules, polygraphy lint,
  ONNX Runtime against the PyTorch fake-quant model on ``--verify-images`` images.

The issue's target: export + verification within 2x the calibration (weight ranges + activation
histograms). Writes the ``imagenet-export`` section of ``docs/imagenet-cost.md``; ``--quick`` runs
ResNet-50 at base width 8, 64 px, 8 images, into a temp folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

import requant_plugin.export.onnx_qdq as onnx_qdq
from benchmarks.archs import build
from benchmarks.harness.markdown import md_table, write_section
from benchmarks.harness.paths import DOCS, QUICK_OUT
from benchmarks.harness.runtime import command, setup
from benchmarks.imagenet_beyond import images
from benchmarks.imagenet_cost import HEADER, THREADS, footer
from requant_plugin.export import export_onnx_qdq, verify_export
from requant_plugin.zoo.resnet_imagenet import resnet50

TARGET = 2.0  # issue 17: export + verification within this many times the calibration
PHASES = ("load_fp32", "quantize_plan_weights", "collect_histograms")


@contextmanager
def timed_phases() -> Iterator[dict[str, float]]:
    """Time the export's internal phases (wrapping the functions ``export_onnx_qdq`` calls)."""
    spent: dict[str, float] = dict.fromkeys(PHASES, 0.0)

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0
        return timed

    with ExitStack() as stack:
        for name in PHASES:
            stack.enter_context(mock.patch.object(onnx_qdq, name, wrap(name, getattr(onnx_qdq, name))))
        yield spent


def model_for(arch: str, quick: bool) -> nn.Module:
    """The random-init architecture (ResNet-50 from the package zoo, the others from ``benchmarks.archs``)."""
    torch.manual_seed(0)
    if arch == "resnet50":
        return resnet50(base=8 if quick else 64).eval()
    return build(arch).eval()


def measure(arch: str, model: nn.Module, data: list[torch.Tensor], n_verify: int) -> list[str]:
    """One table row: the phases, export + verification, and the ratio to the calibration."""
    with tempfile.TemporaryDirectory() as tmp, timed_phases() as spent:
        t0 = time.perf_counter()
        report = export_onnx_qdq(model, data, Path(tmp) / f"{arch}.onnx", progress=True)
        export_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = verify_export(report, model=model, images=data[0][:n_verify], progress=True)
        verify_s = time.perf_counter() - t0
    calib = spent["quantize_plan_weights"] + spent["collect_histograms"]
    rest = export_s - sum(spent.values())
    ratio = (export_s + verify_s) / calib if calib > 0 else float("nan")
    checks = "ok" if res.get("onnx_checker") == "ok" and res.get("trt_rule_errors") == 0 else "FAILED"
    return [arch, f"{spent['load_fp32']:.1f}", f"{spent['quantize_plan_weights']:.1f}",
            f"{spent['collect_histograms']:.1f}", f"{rest:.1f}", f"{export_s:.1f}", f"{verify_s:.1f}",
            f"**{ratio:.2f}x** ({'met' if ratio <= TARGET else 'NOT met'})", checks]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="resnet50(base=8), 64 px, 8 images, temp output")
    ap.add_argument("--archs", nargs="+", default=None, help="default: resnet50 regnet_x_400mf (quick: resnet50)")
    ap.add_argument("--images", type=int, default=None, help="calibration images (default 256; quick: 8)")
    ap.add_argument("--size", type=int, default=None, help="image side (default 224; quick: 64)")
    ap.add_argument("--verify-images", type=int, default=8, help="images for ORT vs fake-quant")
    ap.add_argument("--out", type=Path, default=None, help="docs folder (default docs/; quick: a temp dir)")
    args = ap.parse_args(argv)
    setup(0, threads=THREADS)
    argv_s = list(argv if argv is not None else sys.argv[1:])
    n = args.images or (8 if args.quick else 256)
    size = args.size or (64 if args.quick else 224)
    archs = args.archs or (["resnet50"] if args.quick else ["resnet50", "regnet_x_400mf"])
    data = images(n, size)
    rows = [measure(a, model_for(a, args.quick), data, args.verify_images) for a in archs]
    table = md_table(["arch", "FP32 ONNX s", "weight ranges s", "activation histograms s", "rest s",
                      "export s", "verification s", "(export + verification) / calibration", "checks"],
                     rows, "lrrrrrrll")
    body = "\n".join([
        f"## Q/DQ export at {size}x{size}",
        "",
        f"`export_onnx_qdq` (W8A8) with {n} seeded random {size}x{size} calibration images, then "
        f"`verify_export` with {args.verify_images} images; random-init models"
        f"{' (ResNet-50 at base width 8)' if args.quick else ''}, {THREADS} torch threads, one run each. "
        "Calibration = weight ranges + activation histograms (ONNX Runtime over the calibration images); "
        f"issue 17's target: export + verification within {TARGET:.0f}x the calibration.",
        "",
        table,
        "",
        *footer(command("imagenet_export", argv_s)),
    ])
    out = args.out or (QUICK_OUT if args.quick else DOCS)
    write_section(out / "imagenet-cost.md", "imagenet-export", body, header=HEADER,
                  order=("imagenet-cost", "imagenet-beyond", "imagenet-export"))
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
