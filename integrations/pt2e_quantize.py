#!/usr/bin/env python
"""torchao pt2e post-training quantization with REQuant observers: FP32 vs torchao's default vs REQuant.

Exports the shared CIFAR-10 ResNet (or the digits SmallCNN fallback) with a dynamic batch
dimension, then ``prepare_pt2e`` -> calibration -> ``convert_pt2e`` with the X86 Inductor (or
XNNPACK-style) quantizer, once with torchao's default observers (``HistogramObserver`` +
``PerChannelMinMaxObserver``) and once with ``requant_plugin.pt2e``'s REQuant config, both on the
same specs and sub-8-bit ranges (honoured by the decomposed ``quantize_per_tensor`` nodes), and
prints the top-1 accuracy of each::

    python integrations/pt2e_quantize.py --model resnet20 --bits 4 --act-bits 4 --calib-batches 16

``--variants`` also evaluates REQuant's plain weight-MSE objective (``rho = 0``), REQuant
activations with min-max weights, and the sqrt-space weight range.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fx_qconfig import common_args, forward_arg, load_task, print_refinement, print_rows, quiet  # noqa: E402

from requant_plugin.data import evaluate_accuracy  # noqa: E402


def quantize_pt2e(model: nn.Module, quantizer: Any, calibration: Sequence[torch.Tensor], *,
                  refine: bool = False) -> tuple[nn.Module, float]:
    """``torch.export`` (dynamic batch) -> ``prepare_pt2e`` -> calibration (timed) -> ``convert_pt2e``.

    ``refine=True`` fits the REQuant activation ranges' shared factor on the calibration batches'
    output error before converting (:func:`requant_plugin.refine.refine_activation_ranges`, not
    included in the seconds). ``model`` is not modified: a contiguous deep copy is exported (so
    parameters created under ``torch.inference_mode()`` and channels_last models give the plain
    model's result). The result is put in eval mode with ``allow_exported_model_train_eval``
    (exported modules otherwise refuse ``.eval()``/``.train()``).
    """
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batch = torch.export.Dim("batch", min=1)
    # a copy: the user's model keeps its mode, inference-mode parameters become ordinary tensors
    # (torch.export cannot trace inference tensors) and weights contiguous (a channels_last conv sums
    # in another order, so the observers would see activations a few ulps apart from the plain
    # model's; Inductor picks its own layouts when compiling); fp16/bf16 models export as they are
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
    exported = torch.export.export(plain, (calibration[0],),
                                   dynamic_shapes={forward_arg(model): {0: batch}})
    prepared = prepare_pt2e(exported.module(), quantizer)
    start = time.perf_counter()
    with torch.no_grad():
        for x in calibration:
            prepared(x)
    seconds = time.perf_counter() - start
    if refine:
        from requant_plugin.refine import refine_activation_ranges

        print_refinement(refine_activation_ranges(prepared, model, calibration, flow="pt2e"))
    quantized = convert_pt2e(prepared)
    allow_exported_model_train_eval(quantized)
    quantized.eval()  # the patched eval() returns None, not the module
    return quantized, seconds


def count_qdq(model: nn.Module) -> dict[str, int]:
    """Number of ``quantized_decomposed`` q/dq nodes by op (0 means nothing was quantized)."""
    graph = getattr(model, "graph", None)
    counts: dict[str, int] = {}
    for node in [] if graph is None else graph.nodes:
        target = str(node.target)
        if "quantized_decomposed" in target:
            op = target.split(".")[-2]
            counts[op] = counts.get(op, 0) + 1
    return counts


def configurations(weight_bits: int, act_bits: int, backend: str, variants: bool = False
                   ) -> list[tuple[str, str, Any]]:
    """``(key, label, quantizer)`` for the default and the REQuant configs (plus variants).

    ``requant`` is ``get_requant_quantizer``'s default (REQuant activations; weights searched on
    the weight MSE plus the coherent output-error term, ``rho = 0.467``); the variants are
    REQuant's plain weight MSE (``rho = 0``), min-max weights, and the sqrt-space weight range.
    """
    from requant_plugin.pt2e import get_requant_quantizer, get_torchao_default_quantization_config, make_quantizer

    out = [
        ("default", "torchao default observers",
         make_quantizer(get_torchao_default_quantization_config(weight_bits, act_bits, backend=backend), backend)),
        ("requant", "REQuant", get_requant_quantizer(weight_bits, act_bits, backend=backend)),
    ]
    if variants:
        out += [
            ("requant_mse", "REQuant, plain weight MSE (rho=0)",
             get_requant_quantizer(weight_bits, act_bits, backend=backend, weight_input_mean_ratio=0.0)),
            ("requant_w_minmax", "REQuant acts + min-max weights",
             get_requant_quantizer(weight_bits, act_bits, backend=backend, weight_search="minmax")),
            ("requant_w_sqrt", "REQuant, sqrt-space weight range",
             get_requant_quantizer(weight_bits, act_bits, backend=backend, weight_space="sqrt",
                                   weight_input_mean_ratio=0.0)),
        ]
    return out


def run(args: argparse.Namespace) -> dict[str, float]:
    """Evaluate FP32 and each configuration; returns the accuracies (percent) and calibration seconds."""
    torch.manual_seed(args.seed)
    task = load_task(args.model, test_limit=args.test_limit, calib_batches=args.calib_batches,
                     batch_size=args.batch_size, seed=args.seed)
    results = {"fp32": evaluate_accuracy(task.model, task.test)}
    rows = [("FP32", results["fp32"], "", "")]
    for key, label, quantizer in configurations(args.bits, args.act_bits, args.backend, args.variants):
        quantized, seconds = quantize_pt2e(task.model, quantizer, task.calibration,
                                           refine=args.refine and key != "default")
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
    p.add_argument("--variants", action="store_true", help="also rho=0, min-max and sqrt-space weights")
    p.add_argument("--refine", action="store_true",
                   help="fit one shared activation range factor of the REQuant configurations on the "
                        "calibration output error (requant_plugin.refine.refine_activation_ranges)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.act_bits = 8 if args.act_bits is None else args.act_bits
    try:
        import torchao  # noqa: F401
    except ImportError:
        print("error: the pt2e flow needs torchao: pip install 'requant-plugin[pt2e]'", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    quiet()
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
