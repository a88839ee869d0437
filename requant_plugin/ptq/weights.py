"""``quantize_weights``: weights-only REQuant PTQ of every Conv/Linear layer of a model."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..core import check_bits, check_space
from ..core.search import check_search
from ..range import RangeEstimate, estimate_range
from .bn_fold import fold_bn_
from .report import LayerReport, QuantizationReport

QUANTIZABLE: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.ConvTranspose3d, nn.Linear,
)
OVERRIDE_KEYS = frozenset({"bits", "space", "skip", "per_channel", "symmetric", "p"})


def weight_ch_axis(module: nn.Module) -> int:
    """Output-channel axis of a layer's weight: 1 for ConvTranspose, 0 otherwise."""
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Conv/ConvTranspose/Linear layer, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


def _check_overrides(overrides: Mapping[str, Mapping[str, Any]], names: list[str]) -> None:
    for name, ov in overrides.items():
        if name not in names:
            raise ValueError(
                f"overrides names an unknown layer {name!r}; quantizable layers are: {names}"
            )
        bad = set(ov) - OVERRIDE_KEYS
        if bad:
            raise ValueError(
                f"overrides[{name!r}] has unknown keys {sorted(bad)}; valid: {sorted(OVERRIDE_KEYS)}"
            )


def quantize_weights(
    model: nn.Module,
    bits: int = 4,
    *,
    space: str = "sqrt",
    symmetric: bool = False,
    per_channel: bool = False,
    fold_bn: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    inplace: bool = False,
    search: str = "golden",
    p: float = 0.5,
    loss_space: str = "original",
    convention: str = "torch",
    transform_first_last: bool = False,
    progress: bool = False,
) -> tuple[nn.Module, QuantizationReport]:
    """Weights-only PTQ: replace each layer's weight by ``T^-1(Q_alpha(T(w)))``.

    For every Conv/ConvTranspose/Linear layer REQuant picks ``alpha`` minimising the weight
    MSE (see :func:`requant_plugin.estimate_range`) and writes the fake-quantized weight back
    (biases and BN parameters stay float). As in the paper, the first and last layers are
    excluded from the transform (plain uniform alpha search) unless
    ``transform_first_last=True``.

    Args:
        model: the float model; deep-copied first unless ``inplace=True``.
        bits: 2..8.
        space: ``"sqrt"`` (REQuant with the transform) or ``"uniform"`` (alpha only).
        symmetric, per_channel, p, loss_space, convention, search: as in ``estimate_range``.
        fold_bn: fold BatchNorm into the preceding layer first (the returned model then has
            ``nn.Identity`` in place of each folded BN).
        overrides: per layer name, any of ``bits``, ``space``, ``skip``, ``per_channel``,
            ``symmetric``, ``p``.
        progress: show a tqdm bar over layers.

    Returns:
        The quantized model and a :class:`QuantizationReport`.

    Raises:
        ValueError: NaN/Inf weights (naming the layer), bad bits/space/search, unknown
            override layers or keys, a model with no quantizable layer.
    """
    check_bits(bits)
    check_space(space)
    check_search(search)
    overrides = dict(overrides or {})
    names = [n for n, _ in quantizable_layers(model)]
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no Conv/ConvTranspose/Linear layer to quantize"
        )
    _check_overrides(overrides, names)
    for name, module in quantizable_layers(model):
        if not torch.isfinite(module.weight).all():
            raise ValueError(
                f"layer {name!r} has NaN/Inf weights; fix the checkpoint or skip the layer with "
                f"overrides={{{name!r}: {{'skip': True}}}}"
            )
    out = model if inplace else copy.deepcopy(model)
    report = QuantizationReport(settings=dict(
        bits=bits, space=space, symmetric=symmetric, per_channel=per_channel, fold_bn=fold_bn,
        search=search, p=p, loss_space=loss_space,
    ))
    if fold_bn:
        report.folded_bn = fold_bn_(out)
    layers = quantizable_layers(out)
    first, last = layers[0][0], layers[-1][0]
    iterator: Any = layers
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(layers, desc=f"REQuant W{bits}", unit="layer")
    for name, module in iterator:
        ov = overrides.get(name, {})
        if ov.get("skip", False):
            report.skipped[name] = "skipped by override"
            continue
        lbits = check_bits(int(ov.get("bits", bits)))
        lspace = str(ov.get("space", space))
        check_space(lspace)
        if name in (first, last) and not transform_first_last and "space" not in ov:
            lspace = "uniform"
        est, secs = _estimate(module, name, lbits, lspace, ov, symmetric, per_channel, p,
                              loss_space, convention, search)
        w = module.weight
        with torch.no_grad():
            w.copy_(est.fake_quantize(w))
        mean_sq = float(w.detach().double().pow(2).mean()) if w.numel() else 0.0
        mse = float(est.mse.double().mean())
        report.layers.append(LayerReport(
            name=name, kind=type(module).__name__, shape=tuple(w.shape), bits=lbits,
            space=lspace, alpha=float(est.alpha.double().mean()), mse=mse,
            rel_mse=mse / mean_sq if mean_sq > 0 else 0.0, evaluations=est.evaluations,
            seconds=secs, note="first/last: no transform" if name in (first, last) else "",
        ))
    return out, report


def _estimate(
    module: nn.Module, name: str, bits: int, space: str, ov: Mapping[str, Any], symmetric: bool,
    per_channel: bool, p: float, loss_space: str, convention: str, search: str,
) -> tuple[RangeEstimate, float]:
    t0 = time.perf_counter()
    est = estimate_range(
        module.weight.detach(), bits,
        symmetric=bool(ov.get("symmetric", symmetric)),
        per_channel=bool(ov.get("per_channel", per_channel)),
        ch_axis=weight_ch_axis(module), space=space,  # type: ignore[arg-type]
        search=search,  # type: ignore[arg-type]
        p=float(ov.get("p", p)), loss_space=loss_space,  # type: ignore[arg-type]
        convention=convention,  # type: ignore[arg-type]
        name=name,
    )
    return est, time.perf_counter() - t0
