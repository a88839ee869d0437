"""W4A4 through the pt2e integer graph: one shared activation range factor vs one per observer.

Issue 18 lists "activation ranges chosen by the network-output error (extending
``refine_activation_ranges`` per layer)" as a direction to measure. For each model, with the weights
and calibration of the results-peers ``pt2e`` row (``quantize_weights(..., recipe="beyond-tensorrt",
fold_bn=True, act_bits=4)`` pinned into ``get_requant_quantizer(4, 4, weight_ranges=report)``, 512 seeded
train images in batches of 64):

* ``shared``: :func:`requant_plugin.refine.refine_activation_ranges` (one factor, golden section on
  the converted graph's calibration output error against the model carrying the quantized weights,
  i.e. the activation error alone), as the results-peers row does (``quantize_pt2e(refine=True)``);
* ``per layer``: the same call with ``layer_factors`` (then one sweep of coordinate descent over the
  observers on a simulation of the graph over ``--layer-batches`` batches, kept only if the converted
  graph's calibration output error drops).

Each converted graph is compared with the FP32 model on held-out training images (never used for calibration:
mean squared logit error, top-1 agreement) and on the test images (top-1). Writes section
``refine-layers`` of ``docs/observers-results.md``; ``--quick`` runs ResNet-20 on 128 calibration images
and 500 test images and writes to a temp folder.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.activation_output_error import held_out_images
from benchmarks.harness.data import load_calibration, load_fp32, load_test_images
from benchmarks.harness.evaluate import Evaluator
from benchmarks.harness.markdown import OBSERVERS_HEADER, fmt, md_table, write_section
from benchmarks.harness.paths import DOCS, QUICK_OUT
from benchmarks.harness.runtime import command, environment, setup
from requant_plugin.observers.flows import convert_pt2e_eval, prepare_pt2e_calibrated
from requant_plugin.pt2e import get_requant_quantizer
from requant_plugin.ptq import quantize_weights
from requant_plugin.refine import LAYER_FACTORS as FACTORS
from requant_plugin.refine import RangeRefinement, refine_activation_ranges

BITS = 4


@dataclass(frozen=True)
class Outcome:
    """One refinement of one model: its result, seconds, held-out MSE / agreement, test top-1."""

    result: RangeRefinement
    seconds: float
    held_mse: float
    held_agree: float
    top1: float


def _prepared(model: nn.Module, cal: list[torch.Tensor]) -> tuple[nn.Module, nn.Module]:
    """The calibrated pt2e graph of the results-peers ``pt2e`` row (beyond weights, REQuant acts), and
    the float model carrying those weights (the reference ``quantize_pt2e(refine=True)`` refines against)."""
    qw, report = quantize_weights(model, BITS, recipe="beyond-tensorrt", calibration_data=cal, fold_bn=True,
                                  act_bits=BITS)
    prepared, _ = prepare_pt2e_calibrated(qw, get_requant_quantizer(BITS, BITS, weight_ranges=report), cal)
    return prepared, qw


@torch.no_grad()
def _held_out(q: nn.Module, fp: nn.Module, images: torch.Tensor) -> tuple[float, float]:
    """Mean squared logit error and top-1 agreement of ``q`` against ``fp`` on ``images``."""
    mse = agree = 0.0
    for x in images.split(256):
        a, b = q(x), fp(x)
        mse += float(((a - b) ** 2).sum())
        agree += float((a.argmax(1) == b.argmax(1)).sum())
    return mse / (len(images) * 10), agree / len(images)


def measure(name: str, cal: list[torch.Tensor], held: torch.Tensor, evaluator: Evaluator,
            layer_batches: int) -> dict[str, Outcome]:
    """Both refinements of ``name`` from the same calibrated graph."""
    fp = load_fp32(name)
    base, reference = _prepared(fp, cal)
    out: dict[str, Outcome] = {}
    for label, factors in (("shared", ()), ("per layer", FACTORS)):
        prepared = copy.deepcopy(base)
        t0 = time.perf_counter()
        res = refine_activation_ranges(prepared, reference, cal, flow="pt2e", layer_factors=factors,
                                       layer_batches=layer_batches)
        secs = time.perf_counter() - t0
        q = convert_pt2e_eval(prepared)
        mse, agree = _held_out(q, fp, held)
        out[label] = Outcome(res, secs, mse, agree, evaluator.accuracy(q, engine="torch"))
        print(f"{name} {label}: calib MSE {res.error:.4f}, held-out MSE {mse:.4f}, agreement {agree:.4f}, "
              f"top-1 {out[label].top1:.2f}, {secs:.0f} s", flush=True)
    return out


def summarise(results: dict[str, dict[str, Outcome]], fp32: dict[str, float], n_cal: int, n_held: int,
              n_test: int, cmd: str, layer_batches: int) -> str:
    """The markdown section."""
    rows = []
    for name, pair in results.items():
        for label, o in pair.items():
            kept = len(o.result.layer_factors) if label == "per layer" else "-"
            rows.append([name, label, fmt(o.result.factor, 3), kept, fmt(o.result.error, 4), fmt(o.held_mse, 4),
                         fmt(100 * o.held_agree, 2), f"{o.top1:.2f} ({o.top1 - fp32[name]:+.2f})", fmt(o.seconds, 1)])
    table = md_table(["model", "activation ranges", "shared factor", "observers with own factor",
                      "calibration output MSE (activations alone)", "held-out output MSE vs FP32",
                      "held-out top-1 agreement with FP32 %", "test top-1 (vs FP32)", "refinement s"],
                     rows, "llrrrrrrr")
    lines = []
    for name, pair in results.items():
        s, p = pair["shared"], pair["per layer"]
        lines.append(f"- {name}: per layer vs shared: held-out output MSE {p.held_mse / s.held_mse - 1:+.1%}, "
                     f"agreement {100 * (p.held_agree - s.held_agree):+.2f} points, test top-1 "
                     f"{p.top1 - s.top1:+.2f}, refinement time x{p.seconds / s.seconds:.1f}")
    return "\n".join([
        "## W4A4 (pt2e): one shared activation range factor vs one per observer", "",
        f"Command: `{cmd}`  ",
        f"{environment()}; {n_cal} calibration images (seed 0, batches of 64), {n_held} held-out train images, "
        f"{n_test} test images. Weights and calibration as the results-peers `pt2e` row; 'per layer' adds "
        f"`layer_factors={FACTORS}` (multiples of the shared factor, one sweep of coordinate descent on the "
        f"simulated graph over {layer_batches} batches, kept only if the converted graph's calibration output "
        "error drops).", "", table, "", *lines, "",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "mobilenetv2"])
    ap.add_argument("--n-cal", type=int, default=512)
    ap.add_argument("--held-out", type=int, default=2000)
    ap.add_argument("--layer-batches", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="ResNet-20, 128 calibration / 500 test images, temp folder")
    ap.add_argument("--out", type=Path, help="folder of the doc (default: docs/, or a temp folder with --quick)")
    args = ap.parse_args(argv)
    setup(0, 2)
    models = ["resnet20"] if args.quick else args.models
    n_cal, n_test = (128, 500) if args.quick else (args.n_cal, 10000)
    n_held = 500 if args.quick else args.held_out
    cal = load_calibration(n_cal, seed=0, batch_size=64)
    held = held_out_images(n_held)
    evaluator = Evaluator(load_test_images(None if n_test >= 10000 else n_test, seed=0), engine="torch")
    results = {m: measure(m, cal, held, evaluator, args.layer_batches) for m in models}
    fp32 = {m: evaluator.accuracy(load_fp32(m)) for m in models}
    out = args.out or (QUICK_OUT if args.quick else DOCS)
    cmd = command("refine_layers", list(argv if argv is not None else sys.argv[1:]))
    body = summarise(results, fp32, n_cal, n_held, n_test, cmd, args.layer_batches)
    write_section(out / "observers-results.md", "refine-layers", body, header=OBSERVERS_HEADER)
    print(f"wrote {out / 'observers-results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
