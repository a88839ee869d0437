"""Bias correction: remove the expected output shift that weight quantization causes.

For a layer ``y = W x + b`` on im2col rows ``x`` with mean ``mu = E[x]`` (see
:mod:`.calibration`), quantizing ``W`` to ``Wq`` shifts the expected output of channel ``c`` by
``E[y_c - yq_c] = (w_c - wq_c) . mu``. Adding that shift to the bias makes the quantized
layer's mean output equal the float one on the calibration distribution:

* ``"plain"``: ``mu`` from the float model: ``delta_c = (w_c - wq_c) . mu_float``;
* ``"sequential"``: statistics from the model whose earlier layers are already quantized and
  corrected: ``delta_c = w_c . mu_float - wq_c . mu_quant`` (also absorbs the mean shift
  arriving from upstream);
* ``"bn"``: data-free, ``mu`` from the BatchNorm statistics (:func:`bn_input_means`).

Layers without a bias get one (a new ``nn.Parameter``).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

__all__ = [
    "BIAS_CORRECTIONS", "add_to_bias_", "bn_input_means", "check_bias_correction", "expected_output",
    "output_shift", "write_guard",
]

BIAS_CORRECTIONS: tuple[str, ...] = ("plain", "sequential", "bn")


def check_bias_correction(value: bool | str | None) -> str | None:
    """Normalise the ``bias_correction`` argument: ``False``/``None`` -> ``None``,
    ``True`` -> ``"plain"``; raise ValueError for unknown strings."""
    if value is None or value is False:
        return None
    if value is True:
        return "plain"
    if isinstance(value, str) and value in BIAS_CORRECTIONS:
        return value
    raise ValueError(
        f"unknown bias_correction {value!r}: valid values are False, True, {list(BIAS_CORRECTIONS)}"
    )


def expected_output(weight: torch.Tensor, mean: np.ndarray) -> np.ndarray:
    """``w_c . mu_{group(c)}`` per output channel (``(C,)``, float64), bias excluded.

    ``weight`` has the output channels along axis 0; ``mean`` is ``(groups, n)`` or ``(n,)``.
    """
    w = weight.detach().double().reshape(weight.shape[0], -1).cpu().numpy()
    mu = np.asarray(mean, dtype=np.float64)
    mu = mu[None] if mu.ndim == 1 else mu
    if mu.shape[1] != w.shape[1] or w.shape[0] % mu.shape[0]:
        raise ValueError(f"mean of shape {mu.shape} does not fit a weight of shape {tuple(weight.shape)}")
    grp = np.arange(w.shape[0]) // (w.shape[0] // mu.shape[0])
    return np.asarray(np.einsum("cn,cn->c", w, mu[grp]))


def output_shift(weight: torch.Tensor, weight_q: torch.Tensor, mean: np.ndarray) -> np.ndarray:
    """``E[y - yq]`` per channel: ``(w_c - wq_c) . mu`` (float64 ``(C,)``)."""
    return expected_output(weight.detach().double() - weight_q.detach().double(), mean)


def write_guard(t: torch.Tensor) -> contextlib.AbstractContextManager[object]:
    """The mode an in-place write into ``t`` needs: ``torch.inference_mode()`` for an inference
    tensor (writing one outside inference mode raises), ``torch.no_grad()`` otherwise."""
    return torch.inference_mode() if t.is_inference() else torch.no_grad()


@torch.no_grad()
def add_to_bias_(module: nn.Module, delta: np.ndarray) -> None:
    """Add ``delta`` (``(C,)``) to ``module.bias`` in place, creating the bias if absent."""
    w = module.weight
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    d = torch.as_tensor(np.asarray(delta), dtype=w.dtype, device=w.device)
    bias = module.bias
    if bias is None:
        module.bias = nn.Parameter(d.clone(), requires_grad=w.requires_grad)
    else:
        if not isinstance(bias, torch.Tensor) or bias.shape != d.shape:
            raise ValueError(f"{type(module).__name__}: bias shape does not match {tuple(d.shape)}")
        with write_guard(bias):
            bias.add_(d)


_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def bn_input_means(
    model: nn.Module, input_shape: tuple[int, ...], layers: list[str] | None = None, *,
    batches: int = 4, batch_size: int = 32, seed: int = 0,
) -> dict[str, np.ndarray]:
    """Data-free im2col input means ``(groups, n)`` of Linear/Conv layers from BN statistics.

    Every BatchNorm's output is replaced by independent Gaussian samples with its own
    per-channel mean ``beta`` and standard deviation ``|gamma|`` (what a BN produces on the
    data it was fitted to), and the model input by standard normal noise (a normalised input
    is zero-mean). The real modules then carry these samples through ReLUs, residual
    additions, shortcuts, pooling and zero padding, and the layers' mean input rows are
    measured as in :func:`.calibration.collect_statistics`. For a conv after BN + ReLU this
    is the mean of a rectified Gaussian, ``mu Phi(mu/sigma) + sigma phi(mu/sigma)``, per
    channel, with the padding taps counted exactly. The BatchNorms must still be in the
    model (compute this before folding).

    Args:
        input_shape: shape of one input sample, e.g. ``(3, 32, 32)``.
        layers: layer names (default: every Linear/Conv1d/Conv2d).
    """
    from .calibration import collect_statistics, supports_output_statistics

    bns = [m for m in model.modules() if isinstance(m, _BN_TYPES)]
    if not bns:
        raise ValueError(
            f"bias_correction='bn' needs BatchNorm layers, but {type(model).__name__} has none "
            "(or they were folded already); use bias_correction='plain' with calibration data"
        )
    gen = torch.Generator().manual_seed(seed)

    def replace(module: nn.Module, _args: tuple[object, ...], out: torch.Tensor) -> torch.Tensor:
        bn = module
        assert isinstance(bn, _BN_TYPES)
        c = out.shape[1]
        beta = bn.bias if bn.bias is not None else torch.zeros(c)
        gamma = bn.weight if bn.weight is not None else torch.ones(c)
        shape = [1, c] + [1] * (out.dim() - 2)
        noise = torch.randn(out.shape, generator=gen).to(out.device, out.dtype)
        return beta.detach().reshape(shape) + gamma.detach().abs().reshape(shape) * noise

    names = layers if layers is not None else [
        n for n, m in model.named_modules() if supports_output_statistics(m)
    ]
    handles = [bn.register_forward_hook(replace) for bn in bns]
    try:
        data = [torch.randn((batch_size, *input_shape), generator=gen) for _ in range(batches)]
        stats = collect_statistics(model, data, names, with_gram=False, seed=seed)
    finally:
        for h in handles:
            h.remove()
    return {name: st.mean for name, st in stats.items()}
