"""Shared helpers for the benchmark scripts: setup, data, models, evaluation, caching, markdown.

Accuracy is measured with ONNX Runtime (CPU, 2 threads) on the FP32 ONNX graph of the model
carrying the fake-quantized weights: it gives the same top-1 as
``requant_plugin.data.evaluate_accuracy`` (checked in ``accuracy_table.py --quick``) and is
3-6x faster on this CPU. ``--engine torch`` uses ``evaluate_accuracy`` instead.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import platform
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
IMG = DOCS / "img"
QUICK_OUT = Path(tempfile.gettempdir()) / "requant-bench-quick"

WeightFn = Callable[[str, torch.Tensor, int], torch.Tensor]


def quiet_warnings() -> None:
    """Silence the deprecation chatter of torch.ao / torch.onnx / brevitas in benchmark output."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    import logging

    logging.getLogger("torch").setLevel(logging.ERROR)
    logging.getLogger("torchao").setLevel(logging.ERROR)


def setup(seed: int = 0, threads: int = 2) -> None:
    """Seed every RNG and pin torch to ``threads`` CPU threads (the machine is shared)."""
    quiet_warnings()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def command(script: str, argv: Sequence[str]) -> str:
    """The command line that reproduces a result, as shown in every table caption."""
    return " ".join(["python", f"benchmarks/{script}", *argv]).strip()


def environment() -> str:
    """One line naming the software and machine the numbers come from."""
    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}", f"NumPy {np.__version__}"]
    for mod in ("torchao", "brevitas", "onnxruntime"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except Exception:
            parts.append(f"{mod} (not installed)")
    parts.append(
        f"{os.cpu_count()} CPU cores ({platform.machine()}), torch threads {torch.get_num_threads()}"
    )
    return ", ".join(parts)


# --------------------------------------------------------------------------- data and models


@dataclass(frozen=True)
class Images:
    """Normalised NCHW float32 test images and int64 labels as NumPy arrays."""

    x: np.ndarray
    y: np.ndarray

    @property
    def n(self) -> int:
        return int(self.y.shape[0])


def load_test_images(limit: int | None = None, seed: int = 0) -> Images:
    """The CIFAR-10 test set (all 10k, or a seeded class-stratified subset of ``limit``)."""
    from requant_plugin.data import load_cifar10

    ds = load_cifar10(train_limit=0, test_limit=limit, seed=seed)
    return Images(ds.x_test.numpy(), ds.y_test.numpy())


def load_calibration(n_images: int, seed: int = 0, batch_size: int = 32) -> list[torch.Tensor]:
    """``n_images`` seeded random TRAIN images in batches (for activation observers)."""
    from requant_plugin.data import load_cifar10

    ds = load_cifar10(train_limit=10000, test_limit=10, seed=seed)
    return ds.calibration_batches(n_images, batch_size=batch_size, seed=seed)


def load_fp32(name: str) -> nn.Module:
    """A shared pretrained CIFAR-10 ResNet (``resnet20``/``resnet56``) in eval mode."""
    from requant_plugin.zoo import load_model

    return load_model(name).eval()


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv/ConvTranspose/Linear layer, in registration order."""
    from requant_plugin.ptq import quantizable_layers

    return quantizable_layers(model)


@torch.no_grad()
def apply_per_layer(model: nn.Module, fn: WeightFn, *, fold_bn: bool = False) -> nn.Module:
    """A copy of ``model`` (BN folded first if asked) with each layer's weight ``fn(name, w, ch_axis)``."""
    from requant_plugin.ptq import fold_bn_, weight_ch_axis

    out = copy.deepcopy(model).eval()
    if fold_bn:
        fold_bn_(out)
    for name, module in weight_layers(out):
        w: torch.Tensor = module.weight  # type: ignore[assignment]
        w_hat = fn(name, w.detach().clone(), weight_ch_axis(module))
        if w_hat.shape != w.shape:
            raise RuntimeError(f"{name}: quantizer returned shape {tuple(w_hat.shape)} for {tuple(w.shape)}")
        w.copy_(w_hat.to(w.dtype))
    return out


def weights_digest(model: nn.Module) -> str:
    """Short hash of all parameters (to tell identical quantized models apart)."""
    h = hashlib.sha1()
    for _, p in sorted(model.state_dict().items()):
        if p.is_floating_point():
            h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------- evaluation


class Evaluator:
    """Top-1 accuracy (%) of a CIFAR model on fixed images, with ONNX Runtime or torch.

    Args:
        images: the evaluation images.
        engine: ``"ort"`` (ONNX Runtime CPU on an FP32 ONNX export) or ``"torch"``.
        batch_size: images per forward pass.
    """

    def __init__(self, images: Images, engine: str = "ort", batch_size: int = 500) -> None:
        if engine not in ("ort", "torch"):
            raise ValueError(f"engine must be 'ort' or 'torch', got {engine!r}")
        self.images, self.engine, self.batch_size = images, engine, batch_size

    def accuracy(self, model: nn.Module, engine: str | None = None) -> float:
        """Top-1 in percent; ``engine`` overrides the default for this call."""
        eng = engine or self.engine
        if eng == "ort":
            return self._ort(model)
        return self._torch(model)

    def _torch(self, model: nn.Module) -> float:
        from requant_plugin.data import evaluate_accuracy

        x, y = torch.from_numpy(self.images.x), torch.from_numpy(self.images.y)
        batches = [
            (x[i : i + self.batch_size], y[i : i + self.batch_size])
            for i in range(0, len(y), self.batch_size)
        ]
        return float(evaluate_accuracy(model, batches))

    def _ort(self, model: nn.Module) -> float:
        import onnxruntime as ort

        buf = io.BytesIO()
        sample = torch.from_numpy(self.images.x[:1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.eval(),
                (sample,),
                buf,  # type: ignore[arg-type]
                dynamo=False,
                input_names=["x"],
                output_names=["logits"],
                dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
        correct = 0
        for i in range(0, self.images.n, self.batch_size):
            logits = sess.run(None, {"x": self.images.x[i : i + self.batch_size]})[0]
            correct += int((logits.argmax(1) == self.images.y[i : i + self.batch_size]).sum())
        return 100.0 * correct / self.images.n


# --------------------------------------------------------------------------- caching


class ResultCache:
    """A JSON file of finished configurations, so reruns and interrupted runs resume.

    Keys are canonical JSON strings of the configuration dicts; values are result dicts.
    The file is rewritten atomically after each ``put``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                self.data = {}

    @staticmethod
    def key(config: dict[str, Any]) -> str:
        return json.dumps(config, sort_keys=True)

    def get(self, config: dict[str, Any]) -> dict[str, Any] | None:
        return self.data.get(self.key(config))

    def put(self, config: dict[str, Any], result: dict[str, Any]) -> None:
        self.data[self.key(config)] = result
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------- markdown


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one char per column (``l``/``r``/``c``)."""
    head = [str(h) for h in headers]
    spec = align or ("l" + "r" * (len(head) - 1))
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(marks[a] for a in spec) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


#: shown for missing values
DASH = "\u2013"


def fmt(x: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals, or an en dash for missing values."""
    return DASH if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def write_section(path: Path, name: str, body: str, *, header: str = "", order: Sequence[str] = ()) -> None:
    """Replace the block between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in ``path``.

    A missing file is created with ``header`` and empty blocks for ``order``; a missing block
    is appended. Other blocks (written by other scripts) are left as they are.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.is_file() else header.rstrip() + "\n"
    for sec in (*order, name):
        if f"<!-- BEGIN {sec} -->" not in text:
            text = text.rstrip() + f"\n\n<!-- BEGIN {sec} -->\n<!-- END {sec} -->\n"
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    i, j = text.index(begin) + len(begin), text.index(end)
    text = text[:i] + "\n" + body.strip() + "\n" + text[j:]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def progress(iterable: Iterable[Any], desc: str, total: int | None = None) -> Iterable[Any]:
    """A tqdm bar on stderr (plain iteration when tqdm is missing)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, dynamic_ncols=True)


def best_time(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """``(min seconds over repeats, last result)``: the least-disturbed run on a shared CPU."""
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


RESULTS_HEADER = """# REQuant reproduction and peer comparison (CIFAR-10)

Generated by the scripts in `benchmarks/` (each table names the command that produced it);
do not edit by hand. Rerun everything with `python benchmarks/run_all.py` (about 40 minutes of
CPU on 2 cores; finished configurations are cached in `benchmarks/results/*.json`).
Quick check (subset, CI): `python benchmarks/run_all.py --quick`.
"""

RESULTS_ORDER = ("setup", "accuracy", "claims", "ablation", "ptq", "search-cost", "convexity")

CORE_HEADER = """# Core acceptance benchmarks (issue 3)

Search quality, speed and weights-only accuracy of the REQuant core. Generated by the
scripts in `benchmarks/` (each section names its command); do not edit by hand.
"""

CORE_ORDER = ("search-quality", "speed", "accuracy")


# --------------------------------------------------------------------------- ResNet-50-sized weights


def resnet50_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """The 54 weight tensors of torchvision's ResNet-50 (53 convs + fc), 25.5M values."""
    shapes: list[tuple[str, tuple[int, ...]]] = [("conv1", (64, 3, 7, 7))]
    inplanes = 64
    for stage, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            pre = f"layer{stage}.{b}"
            shapes += [
                (f"{pre}.conv1", (planes, inplanes, 1, 1)),
                (f"{pre}.conv2", (planes, planes, 3, 3)),
                (f"{pre}.conv3", (planes * 4, planes, 1, 1)),
            ]
            if b == 0:
                shapes.append((f"{pre}.downsample.0", (planes * 4, inplanes, 1, 1)))
            inplanes = planes * 4
    shapes.append(("fc", (1000, 2048)))
    return shapes


def resnet50_weights(seed: int = 0, scale_down: int = 1) -> list[tuple[str, torch.Tensor]]:
    """Seeded He-normal tensors with ResNet-50's shapes (``scale_down`` divides the channel
    counts for quick runs; 1 gives the real 25.5M values)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name, shape in resnet50_shapes():
        s = list(shape)
        if scale_down > 1:
            s[0] = max(1, s[0] // scale_down)
            if s[1] > 3:
                s[1] = max(1, s[1] // scale_down)
        fan_in = int(np.prod(s[1:]))
        out.append((name, torch.randn(s, generator=gen) * float(np.sqrt(2.0 / fan_in))))
    return out


def model_weights(name: str, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """``(layer, weight)`` of a shared ResNet, or of the ResNet-50-sized random set
    (``"resnet50-random"``; ``"resnet50-random/16"`` for a 1/16-width quick version)."""
    if name.startswith("resnet50-random"):
        div = int(name.split("/")[1]) if "/" in name else 1
        return resnet50_weights(seed, div)
    model = load_fp32(name)
    out = []
    for n, m in weight_layers(model):
        w: torch.Tensor = m.weight  # type: ignore[assignment]
        out.append((n, w.detach().clone()))
    return out
