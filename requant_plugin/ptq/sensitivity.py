"""How much the network's output cares about each layer's output channels: the diagonal of the Fisher
information at each layer output, for mixed precision.

For an output perturbation ``d`` of a layer (independent across elements, zero mean), the network's
``KL(p_float || p_quant) ~ 1/2 E[(g . d)^2] ~ 1/2 sum_c F_c E[d_c^2]`` with ``g`` the gradient of the
log-likelihood of a label drawn from the model's own prediction with respect to the layer's output and
``F_c = E[sum_positions g_c^2]`` (one draw per sample: an unbiased estimate of the Fisher diagonal).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["output_fisher"]

#: samples per backward pass (bounds the activations kept for the gradient, whatever the batch size)
CHUNK = 16


def output_fisher(
    model: nn.Module, batches: Sequence[Tensor], names: Sequence[str], *, seed: int = 0,
) -> dict[str, np.ndarray]:
    """``F_c`` (see the module) of every layer in ``names`` (Linear: channels last; Conv: axis 1), per sample.

    A 2-D model output ``(N, K)`` is taken as logits (categorical likelihood, label drawn from the
    softmax); any other single tensor as the mean of a unit-variance Gaussian (``g = J^T v``, ``v ~ N(0, I)``),
    whose Fisher weighs the output MSE. The model is left as it is: a contiguous deep copy runs in eval mode (so
    parameters made under ``torch.inference_mode()`` can be saved for backward, and a channels_last model
    gives the plain model's numbers); no ``.grad`` is written.
    """
    twin: Any = copy.deepcopy(model)  # Module.to's stubs omit memory_format
    twin = twin.to(memory_format=torch.contiguous_format).eval()  # as the statistics see it
    modules = {n: twin.get_submodule(n) for n in names}
    outputs: dict[str, list[Tensor]] = {}

    def keep(name: str, out: Tensor) -> Tensor:
        if not out.requires_grad:  # no graph reaches this layer yet (integer input, frozen parameters)
            out = out.detach().requires_grad_(True)
        outputs.setdefault(name, []).append(out)  # a module called twice: both calls' positions count
        return out

    for n, m in modules.items():
        m.register_forward_hook(lambda m, i, o, n=n: keep(n, o))
    sums = {n: np.zeros(0) for n in names}
    gen = torch.Generator().manual_seed(seed)
    count = 0
    for batch in batches:
        for x in batch.split(CHUNK):
            outputs.clear()
            with torch.enable_grad():
                y = twin(x)
                if not isinstance(y, Tensor) or not y.is_floating_point():
                    raise ValueError(f"sensitivity='network' needs a model returning one float tensor, got "
                                     f"{type(y).__name__}; use sensitivity='layer'")
                missing = [n for n in names if n not in outputs]
                if missing:
                    raise ValueError(f"layer {missing[0]!r} did not run on the calibration data; "
                                     "quantize it separately or leave it out")
                _check_finite(y, names, outputs)
                calls = [(n, o) for n in names for o in outputs[n]]
                grads = torch.autograd.grad(_log_likelihood(y, gen), [o for _, o in calls], allow_unused=True)
            for (n, o), g in zip(calls, grads, strict=True):
                sq = _channel_sums(modules[n], o if g is None else g, zero=g is None)
                sums[n] = sq if not sums[n].size else sums[n] + sq
            count += len(x)
    out = {n: s / max(count, 1) for n, s in sums.items()}
    if not all(np.isfinite(v).all() for v in out.values()):
        bad = next(n for n, v in out.items() if not np.isfinite(v).all())
        raise ValueError(f"the output gradient at layer {bad!r} is not finite; check the model and the data "
                         "for NaN/Inf, or use sensitivity='layer'")
    return out


def _check_finite(y: Tensor, names: Sequence[str], outputs: dict[str, list[Tensor]]) -> None:
    """A ``ValueError`` naming the first layer whose output is not finite (NaN/Inf weights or data)."""
    if bool(torch.isfinite(y).all()):
        return
    bad = next((n for n in names if not all(bool(torch.isfinite(o).all()) for o in outputs[n])), None)
    where = f"the output of layer {bad!r}" if bad else "the model's output"
    raise ValueError(f"{where} is not finite on the calibration data; check the weights and the data for NaN/Inf")


def _log_likelihood(y: Tensor, gen: torch.Generator) -> Tensor:
    """Summed log-likelihood of a target drawn from the model's own predictive distribution (in float64 on the
    CPU, where the generator lives, whatever the model's device: the gradient flows back through the copy)."""
    y = y.cpu().double()
    if y.dim() == 2:
        logp = torch.log_softmax(y, dim=1)
        label = torch.multinomial(logp.detach().exp().float(), 1, generator=gen)
        return logp.gather(1, label).sum()
    noise = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    return (y * noise).sum()  # gradient J^T v: E[(J^T v)(J^T v)^T] = J^T J


def _channel_sums(module: nn.Module, g: Tensor, *, zero: bool = False) -> np.ndarray:
    """Per output channel, the squared gradient summed over the chunk's samples and positions (zeros where
    no gradient reached the layer: ``g`` is then its output, for the shape)."""
    g = g.detach().cpu().double()
    if isinstance(module, nn.Linear):
        flat = g.reshape(-1, g.shape[-1]).square().sum(0)
    else:
        flat = g.transpose(0, 1).reshape(g.shape[1], -1).square().sum(1)
    return np.zeros(flat.shape[0]) if zero else flat.numpy()
