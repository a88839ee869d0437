#!/usr/bin/env python
"""torchao pt2e post-training quantization with REQuant observers: FP32 vs torchao's default vs REQuant.

Exports the shared CIFAR-10 ResNet (or the digits SmallCNN fallback) with a dynamic batch
dimension, then ``prepare_pt2e`` -> calibration -> ``convert_pt2e`` with the X86 Inductor (or
XNNPACK-style) quantizer, once with torchao's default observers (``HistogramObserver`` +
``PerChannelMinMaxObserver``) and once with ``requant_plugin.pt2e``'s REQuant config, both on the
same specs and sub-8-bit ranges (honoured by the decomposed ``quantize_per_tensor`` nodes), and
prints the top-1 accuracy of each::

    python integrations/pt2e_quantize.py --model resnet20 --bits 4 --act-bits 4 --calib-batches 16

``--residual-bits 8`` adds a row with the residual adds' operands on their own 8-bit observers
(``ObserverSpec.residual_bits``: another setting, every Conv/Linear input stays at ``--act-bits``).
``--variants`` also evaluates REQuant's plain weight-MSE objective (``rho = 0``), REQuant
activations with min-max weights, and the sqrt-space weight range. A thin command line over
:mod:`requant_plugin.observers.flows` and :mod:`requant_plugin.observers.scripts`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from requant_plugin.data import evaluate_accuracy
from requant_plugin.observers.flows import count_qdq, quantize_pt2e
from requant_plugin.observers.scripts import common_args, configurations, load_task, print_rows, quiet
from requant_plugin.refine import LAYER_FACTORS, RefineConfig


def run(args: argparse.Namespace) -> dict[str, float]:
    """Evaluate FP32 and each configuration; returns the accuracies (percent) and calibration seconds."""
    torch.manual_seed(args.seed)
    task = load_task(args.model, test_limit=args.test_limit, calib_batches=args.calib_batches,
                     batch_size=args.batch_size, seed=args.seed)
    results = {"fp32": evaluate_accuracy(task.model, task.test)}
    rows = [("FP32", results["fp32"], "", "")]
    for key, label, quantizer in configurations(args.bits, args.act_bits, args.backend, args.variants,
                                                args.residual_bits):
        wanted = (args.refine or args.refine_layers) and key != "default"
        refine = RefineConfig(layer_factors=LAYER_FACTORS if args.refine_layers else ()) if wanted else False
        quantized, seconds = quantize_pt2e(task.model, quantizer, task.calibration, refine=refine)
        qdq = count_qdq(quantized)
        if not qdq.get("quantize_per_tensor"):
            raise RuntimeError(f"{label}: convert_pt2e produced no quantize nodes")
        results[key] = evaluate_accuracy(quantized, task.test)
        results[f"{key}_calib_s"] = seconds
        rows.append((label, results[key], f"{seconds:.2f}", str(sum(qdq.values()))))
    print_rows(task, f"pt2e {args.backend}, W{args.bits}A{args.act_bits}", rows, "q/dq nodes")
    return results


def parser() -> argparse.ArgumentParser:
    p = common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None))
    p.add_argument("--bits", type=int, default=4, help="weight bits (2..8)")
    p.add_argument("--act-bits", type=int, default=None, help="activation bits (default: 8)")
    p.add_argument("--backend", default="x86_inductor", choices=("x86_inductor", "xnnpack"))
    p.add_argument("--residual-bits", type=int, default=None, choices=range(2, 9), metavar="{2..8}",
                   help="also REQuant with the residual adds' operands on their own observers at this width "
                        "(ObserverSpec.residual_bits)")
    p.add_argument("--variants", action="store_true", help="also rho=0, min-max and sqrt-space weights")
    p.add_argument("--refine", action="store_true",
                   help="fit one shared activation range factor of the REQuant configurations on the "
                        "calibration output error (requant_plugin.refine.refine_activation_ranges)")
    p.add_argument("--refine-layers", action="store_true",
                   help="--refine, then one factor per activation observer (layer_factors=LAYER_FACTORS; "
                        "measured by benchmarks/refine_layers.py: +0.2..+1.3 top-1 at W4A4, 3-7x the time)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.act_bits = 8 if args.act_bits is None else args.act_bits
    from requant_plugin.deps import available, install_hint

    if not available("torchao"):
        print(f"error: the pt2e flow needs torchao: {install_hint('torchao')}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    quiet()
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
