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
must be 8 here; evaluate W4/A4 with ``integrations/pt2e_quantize.py``.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from requant_plugin.data import ArrayDataset, cifar10_available, evaluate_accuracy, load_cifar10  # noqa: E402

CIFAR_MODELS = ("resnet20", "resnet32", "resnet44", "resnet56")
MODELS = (*CIFAR_MODELS, "smallcnn")


@dataclass
class Task:
    """A float model, its test loader and calibration batches."""

    name: str
    dataset: str
    model: nn.Module
    test: Any
    calibration: list[torch.Tensor]


def quiet() -> None:
    """Silence torch's deprecation notices of the FX API, torchao's import noise and the
    quantized-tensor notice: the scripts print tables, not warnings."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
    warnings.filterwarnings("ignore", message="Please use quant_min and quant_max")


def _digits_task(test_limit: int | None, n_calib: int, batch_size: int, seed: int) -> Task:
    from requant_plugin.data import load_digits
    from requant_plugin.zoo import train_small_cnn

    ds: ArrayDataset = load_digits(seed=seed)
    model = train_small_cnn(ds.x_train, ds.y_train, epochs=15, seed=seed)
    n_calib = min(n_calib, len(ds.y_train))
    return Task("smallcnn", "digits", model, ds.loader("test", 256, limit=test_limit, seed=seed),
                ds.calibration_batches(n_calib, batch_size, seed))


def load_task(model: str, *, test_limit: int | None = None, calib_batches: int = 16, batch_size: int = 32,
              seed: int = 0, eval_batch_size: int = 500) -> Task:
    """The shared CIFAR-10 ResNet ``model`` with ``calib_batches`` seeded TRAIN batches, or the digits
    SmallCNN (``model="smallcnn"``, or when the shared data/weights are missing)."""
    n_calib = calib_batches * batch_size
    if model in CIFAR_MODELS and cifar10_available():
        from requant_plugin.zoo import load_model

        try:
            net = load_model(model)
        except (FileNotFoundError, ValueError) as exc:
            print(f"[fallback] {exc}; using the digits SmallCNN", file=sys.stderr)
        else:
            ds = load_cifar10(train_limit=max(n_calib, 2000), test_limit=test_limit, seed=seed)
            return Task(model, "cifar10", net, ds.loader("test", eval_batch_size),
                        ds.calibration_batches(n_calib, batch_size, seed))
    elif model in CIFAR_MODELS:
        print("[fallback] shared CIFAR-10 not found; using the digits SmallCNN", file=sys.stderr)
    elif model != "smallcnn":
        raise ValueError(f"unknown model {model!r}: valid values are {list(MODELS)}")
    return _digits_task(test_limit, n_calib, batch_size, seed)


def forward_arg(model: nn.Module) -> str:
    """Name of the model's (first) forward argument, for ``torch.export`` dynamic shapes."""
    return next(iter(inspect.signature(model.forward).parameters))


def check_fx_model(model: nn.Module) -> None:
    """Refuse, before calibrating, what ``convert_fx`` cannot lower: non-float32 parameters/buffers
    (torch.ao's quantized kernels take float32 only) and NaN/Inf weights (which would surface as
    NaN activations in the next observer)."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and t.dtype != torch.float32:
            raise TypeError(
                f"torch.ao FX quantization: {name!r} is {t.dtype}; convert_fx lowers float32 models only: "
                "quantize model.float() (or use the pt2e flow, integrations/pt2e_quantize.py, which takes "
                "fp16/bf16 models)"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(
                f"torch.ao FX quantization: the weights of {name!r} have NaN/Inf values; REQuant needs "
                "finite weights: fix or reload that layer's weights before quantizing"
            )


def prepare_calibrated(model: nn.Module, qconfig_mapping: Any, calibration: Sequence[torch.Tensor],
                       backend: str = "x86") -> tuple[nn.Module, float]:
    """``prepare_fx`` on a copy of ``model`` (checked by :func:`check_fx_model`, not modified) and the
    calibration batches through it (seconds measured)."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    check_fx_model(model)
    torch.backends.quantized.engine = backend
    prepared = prepare_fx(copy.deepcopy(model).eval(), qconfig_mapping, (calibration[0],))
    start = time.perf_counter()
    with torch.no_grad():
        for x in calibration:
            prepared(x)
    return prepared, time.perf_counter() - start


def quantize_fx(model: nn.Module, qconfig_mapping: Any, calibration: Sequence[torch.Tensor],
                backend: str = "x86", *, refine: bool = False) -> tuple[nn.Module, float]:
    """:func:`prepare_calibrated` -> ``convert_fx``; ``refine=True`` fits the REQuant activation
    ranges' shared factor on the output error of the calibration batches before converting
    (:func:`requant_plugin.refine.refine_activation_ranges`, not included in the seconds)."""
    from torch.ao.quantization.quantize_fx import convert_fx

    prepared, seconds = prepare_calibrated(model, qconfig_mapping, calibration, backend)
    if refine:
        from requant_plugin.refine import refine_activation_ranges

        print_refinement(refine_activation_ranges(prepared, model, calibration))
    return convert_fx(prepared), seconds


def print_refinement(res: Any) -> None:
    """One stderr line for a :class:`requant_plugin.refine.RangeRefinement`."""
    print(f"[refine] activation range factor {res.factor:.3f}: calibration output MSE "
          f"{res.error_at_one:.4g} -> {res.error:.4g} ({res.evaluations} evaluations)", file=sys.stderr)


def default_mapping(backend: str = "x86") -> Any:
    """torch's default qconfig mapping (HistogramObserver + PerChannelMinMaxObserver on x86)."""
    from torch.ao.quantization import get_default_qconfig_mapping

    return get_default_qconfig_mapping(backend)


def check_quantized(model: nn.Module) -> int:
    """Number of quantized conv/linear modules (a wrong dtype silently leaves float modules)."""
    kinds = (torch.ao.nn.quantized.Conv2d, torch.ao.nn.quantized.Linear)
    return sum(isinstance(m, kinds) for m in model.modules())


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


def print_rows(task: Task, flow: str, rows: Sequence[tuple[str, float, str, str]], count_label: str) -> None:
    """The result table of an integration script: one line per configuration (label, top-1 %,
    calibration seconds, a count of quantized nodes or modules under ``count_label``)."""
    n_test = sum(len(b[1]) for b in task.test)
    print(f"{task.name} on {task.dataset} ({n_test} test images, {len(task.calibration)} calibration "
          f"batches of {task.calibration[0].shape[0]}), {flow}")
    width = max(30, *(len(r[0]) for r in rows))
    print(f"{'model':{width}s} {'top-1 %':>8s} {'calib s':>8s} {count_label:>11s}")
    for label, acc, sec, n in rows:
        print(f"{label:{width}s} {acc:8.2f} {sec:>8s} {n:>11s}")


def common_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every integration script shares: data, calibration sample, seed, threads."""
    p.add_argument("--model", default="resnet20", choices=MODELS)
    p.add_argument("--calib-batches", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32, help="calibration batch size")
    p.add_argument("--test-limit", type=int, default=None, help="stratified test subset (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p


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
