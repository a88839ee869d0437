#!/usr/bin/env python
"""torch.ao FX post-training quantization with REQuant observers: FP32 vs torch's default vs REQuant.

Quantizes the shared CIFAR-10 ResNet (or, when the shared data or weights are absent, a small CNN
trained in seconds on scikit-learn's digits) with ``prepare_fx`` -> calibration -> ``convert_fx``
lowered to the x86 backend (real int8 kernels), once with torch's default x86 qconfig mapping
(``HistogramObserver`` + ``PerChannelMinMaxObserver``) and once with
``requant_plugin.get_requant_qconfig_mapping``, on the same calibration batches, and prints the
top-1 accuracy of FP32, the default qconfig and REQuant::

    python integrations/fx_qconfig.py --model resnet20 --bits 8 --calib-batches 16 --test-limit 2000

The lowered FX graph only runs 8-bit ranges (it clamps to the int8 containers), so ``--bits``
must be 8 here; evaluate W4/A4 with ``integrations/pt2e_quantize.py``. A thin command line: the
flow is :mod:`requant_plugin.observers.flows`, the task and table :mod:`requant_plugin.observers.scripts`
(run from an installed checkout, ``pip install -e .``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from requant_plugin.data import evaluate_accuracy
from requant_plugin.observers.flows import (  # noqa: F401  (the script's names, kept for importers)
    check_fx_model,
    check_quantized,
    default_mapping,
    forward_arg,
    prepare_calibrated,
    print_refinement,
    quantize_fx,
)
from requant_plugin.observers.scripts import (  # noqa: F401
    CIFAR_MODELS,
    MODELS,
    Task,
    common_args,
    load_task,
    print_rows,
    quiet,
)


def run(args: argparse.Namespace) -> dict[str, float]:
    """Evaluate FP32, torch's default qconfig and REQuant; returns the accuracies (percent)."""
    from requant_plugin import get_requant_qconfig_mapping

    torch.manual_seed(args.seed)
    task = load_task(args.model, test_limit=args.test_limit, calib_batches=args.calib_batches,
                     batch_size=args.batch_size, seed=args.seed)
    results = {"fp32": evaluate_accuracy(task.model, task.test)}
    rows = [("FP32", results["fp32"], "", "")]
    for key, label, mapping in (
        ("default", "torch default x86 qconfig", default_mapping(args.backend)),
        ("requant", "REQuant qconfig" + (" + refined ranges" if args.refine else ""), get_requant_qconfig_mapping(
            weight_bits=args.bits, act_bits=args.act_bits, backend=args.backend, search=args.search,
            weight_search=args.weight_search, weight_space=args.weight_space,
            weight_input_mean_ratio=args.weight_input_mean_ratio)),
    ):
        quantized, seconds = quantize_fx(task.model, mapping, task.calibration, args.backend,
                                         refine=args.refine and key == "requant")
        n_q = check_quantized(quantized)
        if n_q == 0:
            raise RuntimeError(f"{label}: convert_fx produced no quantized modules")
        results[key] = evaluate_accuracy(quantized, task.test)
        results[f"{key}_calib_s"] = seconds
        rows.append((label, results[key], f"{seconds:.2f}", str(n_q)))
    print_rows(task, f"FX convert_fx lowered to {args.backend}, W{args.bits}A{args.act_bits}", rows,
               "int8 layers")
    return results


def parser() -> argparse.ArgumentParser:
    p = common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None))
    p.add_argument("--bits", type=int, default=8, help="weight bits (8: the lowered FX graph is 8-bit)")
    p.add_argument("--act-bits", type=int, default=None, help="activation bits (default: --bits)")
    p.add_argument("--backend", default="x86", choices=("x86", "fbgemm", "qnnpack", "onednn"))
    p.add_argument("--search", default="golden", choices=("golden", "grid", "minmax"))
    p.add_argument("--weight-search", default=None, choices=("golden", "grid", "minmax"))
    p.add_argument("--weight-space", default="uniform", choices=("uniform", "sqrt"))
    p.add_argument("--weight-input-mean-ratio", type=float, default=0.467,
                   help="rho of the weight search (0: REQuant's plain weight MSE)")
    p.add_argument("--refine", action="store_true",
                   help="fit one shared activation range factor on the calibration output error "
                        "(requant_plugin.refine.refine_activation_ranges) before convert_fx")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.act_bits = args.bits if args.act_bits is None else args.act_bits
    if (args.bits, args.act_bits) != (8, 8):
        print("error: the lowered FX graph clamps to the 8-bit containers and ignores sub-8-bit "
              "quant_min/quant_max; run integrations/pt2e_quantize.py for W4/A4", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    quiet()
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
