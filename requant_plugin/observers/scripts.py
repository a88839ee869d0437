"""What the observer integration scripts share: the task (model, test loader, calibration batches),
their common options and their result table (``integrations/fx_qconfig.py``,
``integrations/pt2e_quantize.py`` and the benchmarks that run the same flows)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["CIFAR_MODELS", "MODELS", "Task", "common_args", "configurations", "load_task", "print_rows", "quiet"]

CIFAR_MODELS = ("resnet20", "resnet32", "resnet44", "resnet56", "mobilenetv2")
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
    from ..data import load_digits
    from ..zoo import train_small_cnn

    ds = load_digits(seed=seed)
    model = train_small_cnn(ds.x_train, ds.y_train, epochs=15, seed=seed)
    n_calib = min(n_calib, len(ds.y_train))
    return Task("smallcnn", "digits", model, ds.loader("test", 256, limit=test_limit, seed=seed),
                ds.calibration_batches(n_calib, batch_size, seed))


def load_task(model: str, *, test_limit: int | None = None, calib_batches: int = 16, batch_size: int = 32,
              seed: int = 0, eval_batch_size: int = 500) -> Task:
    """The shared CIFAR-10 ResNet ``model`` with ``calib_batches`` seeded TRAIN batches, or the digits
    SmallCNN (``model="smallcnn"``, or when the shared data/weights are missing)."""
    from ..data import cifar10_available, load_cifar10

    n_calib = calib_batches * batch_size
    if model in CIFAR_MODELS and cifar10_available():
        from ..zoo import load_model

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


def configurations(weight_bits: int, act_bits: int, backend: str, variants: bool = False,
                   residual_bits: int | None = None) -> list[tuple[str, str, Any]]:
    """``(key, label, quantizer)`` for the default and the REQuant configs (plus variants).

    ``requant`` is ``get_requant_quantizer``'s default (REQuant activations; weights searched on
    the weight MSE plus the coherent output-error term, ``rho = 0.467``); the variants are
    REQuant's plain weight MSE (``rho = 0``), min-max weights, and the sqrt-space weight range.
    ``residual_bits`` adds ``requant_res{b}``: REQuant with the residual adds' operands on their own
    ``b``-bit observers (:attr:`~requant_plugin.observers.spec.ObserverSpec.residual_bits`, another setting).
    """
    from .pt2e import get_requant_quantizer, get_torchao_default_quantization_config, make_quantizer

    out = [
        ("default", "torchao default observers",
         make_quantizer(get_torchao_default_quantization_config(weight_bits, act_bits, backend=backend), backend)),
        ("requant", "REQuant", get_requant_quantizer(weight_bits, act_bits, backend=backend)),
    ]
    if residual_bits is not None:
        out.append((f"requant_res{residual_bits}", f"REQuant, residual adds' operands {residual_bits}-bit",
                    get_requant_quantizer(weight_bits, act_bits, backend=backend, residual_bits=residual_bits)))
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
