"""One cell of the matrix: run a path on a copy of the model (seeded, timed, time-limited), compare
its outputs with FP32, and classify what happened.

Status rule (:func:`classify`):

* ``ok``: the path returned outputs of the FP32 shape, all finite.
* ``clear error``: the path raised, and the exception is one the user can act on:
  :class:`~requant_plugin.deps.MissingDependency` (names the ``pip install`` line), or an
  exception *raised by requant_plugin code* (the innermost frame lies in the package) whose
  message names a layer of the model (a module path of ``named_modules()``, one-word paths in
  quotes, or a module class name: :func:`names_layer`) and a fix (one of :data:`FIX_WORDS`).
* ``timeout``: the cell ran past ``--cell-timeout`` (not a verdict on the library).
* ``failure``: anything else: an exception from torch/torchao/onnx or one of ours without layer
  or fix, a :class:`~benchmarks.coverage.paths.CellFailure` (ORT mismatch, TensorRT rule
  error, nothing quantized), wrong output shape, NaN/Inf outputs.

Output error against FP32 on the random test inputs: ``max_norm = max|y_q - y_fp| / max|y_fp|``
(not a relative error: the logits of random-weight nets can be near zero) and ``agree``: the
percentage of test inputs whose argmax agrees.
"""

from __future__ import annotations

import copy
import re
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.coverage.paths import CellFailure, Inputs
from benchmarks.harness.runtime import seed_everything

OK, CLEAR, FAILURE, TIMEOUT = "ok", "clear error", "failure", "timeout"
STATUSES = (OK, CLEAR, FAILURE, TIMEOUT)
#: words by which a message proposes a fix
FIX_WORDS = ("use ", "pass ", "set ", "install", "quantize ", "drop ", "keep ", "give ", "remove ", "replace ",
             "call ", "convert ", "wrap ", "exclude", "rewrite ", "add ", "fold")
PACKAGE = str(Path(__file__).resolve().parents[2] / "requant_plugin")


class CellTimeout(Exception):
    """The cell ran past its time limit."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CellTimeout` after ``seconds`` (SIGALRM; main thread only; ``None``/0: no limit).
    A long native call finishes before the signal is handled."""
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise CellTimeout(f"cell ran past its {seconds:g} s limit")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def layer_names(model: nn.Module) -> set[str]:
    """What counts as naming a layer: every non-root module path and module class name."""
    names = {n for n, _ in model.named_modules() if n}
    return names | {type(m).__name__ for m in model.modules()}


def _raised_in_package(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and str(Path(frames[-1].filename).resolve()).startswith(PACKAGE)


def names_layer(message: str, names: Iterable[str]) -> bool:
    """Whether ``message`` names one of ``names``: a dotted path (``layer1.0.conv1``) or a class name
    (``Conv2d``) as a whole word, a one-word path only in quotes (``'fc'``: not the word "head")."""
    for n in names:
        if "." in n or n[:1].isupper():
            if re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", message):
                return True
        elif re.search(rf"['\"`]{re.escape(n)}[.'\"`]", message):
            return True
    return False


def classify(exc: BaseException, names: Iterable[str]) -> str:
    """The status of a cell that raised ``exc`` (the rule in the module docstring)."""
    from requant_plugin.deps import MissingDependency

    if isinstance(exc, CellTimeout):
        return TIMEOUT
    if isinstance(exc, MissingDependency):
        return CLEAR
    if isinstance(exc, CellFailure) or not _raised_in_package(exc):
        return FAILURE
    text = str(exc)
    fix = any(w in text.lower() for w in FIX_WORDS)
    return CLEAR if fix and names_layer(text, names) else FAILURE


def compare(y_q: torch.Tensor, y_fp: torch.Tensor) -> dict[str, float]:
    """``max_norm`` and ``agree`` (%) of ``y_q`` against ``y_fp``; raise CellFailure on a wrong shape/NaN."""
    if tuple(y_q.shape) != tuple(y_fp.shape):
        raise CellFailure(f"output shape {tuple(y_q.shape)}, FP32 gives {tuple(y_fp.shape)}")
    if not bool(torch.isfinite(y_q).all()):
        raise CellFailure(f"{int((~torch.isfinite(y_q)).sum())} non-finite outputs (NaN/Inf)")
    a, b = y_q.detach().double().flatten(1), y_fp.detach().double().flatten(1)
    scale = float(b.abs().max())
    err = float((a - b).abs().max()) / scale if scale > 0 else float("inf")
    agree = 100.0 * float((a.argmax(1) == b.argmax(1)).double().mean())
    return {"max_norm": err, "agree": agree}


def _summary(exc: BaseException) -> str:
    """The exception type, its message's first line and the innermost two frames."""
    frames = traceback.extract_tb(exc.__traceback__)[-2:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:400]} [{where}]"


def run_cell(run: Callable[[nn.Module, Inputs], torch.Tensor], model: nn.Module, inputs: Inputs,
             y_fp: torch.Tensor, *, seed: int = 0, timeout: float | None = None) -> dict[str, Any]:
    """One cell: ``run`` on a deep copy of ``model`` -> ``{"status", "message", "seconds" (wall),
    "cpu_seconds" (this process's CPU time: on a shared machine the steadier figure), ...metrics}``."""
    seed_everything(seed)
    names = layer_names(model)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        with time_limit(timeout):
            y_q = run(copy.deepcopy(model), inputs)
            res: dict[str, Any] = {"status": OK, "message": "", **compare(y_q, y_fp)}
    except Exception as exc:  # every cell is isolated: the status says what happened
        res = {"status": classify(exc, names), "message": _summary(exc)}
    res["seconds"], res["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
    return res
