"""Process setup shared by every benchmark: seeds, threads, quiet warnings, the command line
and environment line shown with each table, progress bars and timing."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits


def quiet_warnings() -> None:
    """Silence the deprecation chatter of torch.ao / torch.onnx / brevitas in benchmark output."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    import logging

    logging.getLogger("torch").setLevel(logging.ERROR)
    logging.getLogger("torchao").setLevel(logging.ERROR)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(seed: int = 0, threads: int = 2) -> None:
    """Seed every RNG and pin torch and NumPy's BLAS to ``threads`` CPU threads each (the machine is
    shared; OpenBLAS otherwise starts one thread per core, whatever torch is told)."""
    quiet_warnings()
    seed_everything(seed)
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads, user_api="blas")


def command(name: str, argv: Sequence[str]) -> str:
    """The command line that reproduces a result, as shown in every table caption:
    ``python -m benchmarks.<name> <argv>`` (a legacy ``name.py`` is accepted)."""
    module = name[:-3] if name.endswith(".py") else name
    return " ".join(["python", "-m", f"benchmarks.{module}", *argv]).strip()


def blas_threads() -> str:
    """``", BLAS threads N"`` for NumPy's BLAS thread pool(s) ("" when none is found)."""
    counts = sorted({int(p["num_threads"]) for p in threadpool_info() if p.get("user_api") == "blas"})
    return f", BLAS threads {'/'.join(map(str, counts))}" if counts else ""


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; else ``platform.processor()`` or the architecture):
    timings differ between CPU models of the same core count."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment() -> str:
    """One line naming the software and machine the numbers come from."""
    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}", f"NumPy {np.__version__}"]
    for mod in ("torchao", "brevitas", "onnxruntime"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except Exception:
            parts.append(f"{mod} (not installed)")
    parts.append(
        f"{os.cpu_count()} CPU cores ({platform.machine()}, {cpu_model()}), torch threads {torch.get_num_threads()}"
        f"{blas_threads()}"
    )
    return ", ".join(parts)


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


def forward_seconds(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> float:
    """Seconds of one no-grad forward pass of ``model`` over ``batches``."""
    t0 = time.perf_counter()
    with torch.no_grad():
        for x in batches:
            model(x)
    return time.perf_counter() - t0
