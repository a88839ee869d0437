"""The timed methods of the search-cost benchmark: each takes ``(weight, bits)`` and returns
``(seconds, loss evaluations)`` for one per-tensor range search plus the fake-quantization."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.harness import peers
from requant_plugin import estimate_range

SETS = {
    "resnet20": "ResNet-20",
    "resnet56": "ResNet-56",
    "resnet50-random": "ResNet-50-sized (random)",
    "resnet50-random/16": "ResNet-50 shapes / 16 (quick)",
}

Timed = Callable[[torch.Tensor, int], tuple[float, int]]  # -> (seconds, evaluations)


def _clock(fn: Callable[[], Any]) -> float:
    """Wall seconds of ``fn()``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def t_requant(space: str) -> Timed:
    """REQuant ``estimate_range(w, bits, space=space)`` + ``fake_quantize``."""
    def run(w: torch.Tensor, bits: int) -> tuple[float, int]:
        box: dict[str, int] = {}

        def go() -> None:
            est = estimate_range(w, bits, space=space)  # type: ignore[arg-type]
            est.fake_quantize(w)
            box["e"] = est.evaluations

        return _clock(go), box["e"]

    return run


def grid100(w: torch.Tensor, bits: int, steps: int = 100) -> torch.Tensor:
    """REQuant's objective on a 100-point alpha grid, one torch fake-quant pass per candidate."""
    x = w.detach().float().reshape(-1)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    qmin, qmax = 0, 2**bits - 1
    best, best_sz = float("inf"), (1.0, 0)
    for i in range(1, steps + 1):
        a = i / steps
        scale = max((hi - lo) * a / (qmax - qmin), 1e-12)
        zp = int(np.clip(qmin - round(lo * a / scale), qmin, qmax))
        err = float(torch.mean((torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax) - x) ** 2))
        if err < best:
            best, best_sz = err, (scale, zp)
    return torch.fake_quantize_per_tensor_affine(x, best_sz[0], best_sz[1], qmin, qmax).reshape(w.shape)


def t_grid100(w: torch.Tensor, bits: int) -> tuple[float, int]:
    """The 100-point torch grid."""
    return _clock(lambda: grid100(w, bits)), 100


def t_peer(key: str) -> Timed:
    """A peer adapter's ``quantize_weight`` (its fixed ``EVALUATIONS``)."""
    def run(w: torch.Tensor, bits: int) -> tuple[float, int]:
        mod = peers.get(key)
        return _clock(lambda: mod.quantize_weight(w, bits, per_channel=False, symmetric=False)), int(mod.EVALUATIONS)

    return run


def t_brevitas(w: torch.Tensor, bits: int) -> tuple[float, int]:
    """Brevitas MSE (the real library; layer construction not timed, evaluations counted)."""
    from benchmarks.harness.peers import brevitas_mse as bm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer: Any = bm._layer(w, bm._quantizer(False, False), bits)
        with torch.no_grad():
            layer.weight.copy_(w)
        layer.eval()
        counter = _count_brevitas(layer)
        with torch.no_grad():
            secs = _clock(lambda: layer.quant_weight().value)
    return secs, counter()


def _count_brevitas(layer: torch.nn.Module) -> Callable[[], int]:
    """Count MSE loss evaluations of every brevitas ``MSE`` stats module in ``layer``."""
    from brevitas.core.stats.stats_op import MSE

    calls = [0]
    for mod in layer.modules():
        if isinstance(mod, MSE):
            orig = mod.evaluate_loss

            def wrapped(x: Any, cand: Any, _orig: Any = orig) -> Any:
                calls[0] += 1
                return _orig(x, cand)

            mod.evaluate_loss = wrapped  # type: ignore[method-assign]
    return lambda: calls[0]


def t_hist(w: torch.Tensor, bits: int) -> tuple[float, int]:
    """torch.ao HistogramObserver (evaluations counted by wrapping its error function)."""
    from benchmarks.harness.peers import torch_hist

    obs: Any = torch_hist.observer(bits, symmetric=False)
    calls = [0]
    orig = obs._compute_quantization_error

    def wrapped(*a: Any) -> Any:
        calls[0] += 1
        return orig(*a)

    obs._compute_quantization_error = wrapped

    def go() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs(w.detach().float())
            s, z = obs.calculate_qparams()
            torch.fake_quantize_per_tensor_affine(w.float(), float(s), int(z), obs.quant_min, obs.quant_max)

    return _clock(go), calls[0]


METHODS: dict[str, tuple[str, Timed | Callable[[], Timed]]] = {
    "requant": ("REQuant alpha (golden)", t_requant("uniform")),
    "requant_sqrt": ("REQuant alpha + sqrt (golden)", t_requant("sqrt")),
    "grid100": ("fake-quant grid, 100 alphas (same objective)", t_grid100),
    "torchao_mse": ("torchao AffineQuantizedMSEObserver (100)", t_peer("torchao_mse")),
    "modelopt_mse": ("ModelOpt-style mse (39)", t_peer("modelopt_mse")),
    "brevitas_mse": ("Brevitas MSE, grid", t_brevitas),
    "torch_hist": ("torch.ao HistogramObserver (greedy)", t_hist),
}
