"""Network-level refinement of REQuant activation ranges: one shared factor, fitted on the output error.

REQuant picks each activation range to minimise that tensor's own quantization MSE. The network's
output error is lowest somewhat below those ranges (measured on the shared CIFAR ResNets at W8A8:
about 5 % below, see ``docs/observers-results.md``, section "W8A8 output error"). This step
searches one factor ``beta`` in ``[lower, 1]``, shared by every REQuant activation observer of a
calibrated model, that minimises the mean squared error between the converted model's outputs and
the float model's on calibration batches:

    beta* = argmin_beta  (1 / N) * sum_x || Q_beta(x) - F(x) ||**2

with golden-section search (:func:`requant_plugin.core.scalar_search.golden_section`; ``beta = 1``
is always evaluated, so the result is never worse than the plain REQuant ranges on those batches).
It needs no labels. Each evaluation converts a copy of the prepared model and runs the batches
through it, about ten in all. The chosen ``beta`` is stored in each observer's ``range_factor``
buffer, so ``convert_fx`` / ``convert_pt2e`` and ``state_dict`` carry it.

Usage (FX; ``flow="pt2e"`` for ``prepare_pt2e`` models)::

    prepared = prepare_fx(model, get_requant_qconfig_mapping(), example)
    for x in calib: prepared(x)
    result = refine_activation_ranges(prepared, model, calib)   # sets range_factor in place
    quantized = convert_fx(prepared)
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..core.scalar_search import golden_section
from ..deps import require
from .activation import ActivationObserverMixin

Flow = Literal["fx", "pt2e"]


@dataclass(frozen=True)
class RangeRefinement:
    """Result of :func:`refine_activation_ranges`.

    ``factor``: the chosen ``beta``; ``error`` / ``error_at_one``: the mean squared output error
    at ``beta`` and at 1 (the plain REQuant ranges); ``points``: every ``(beta, error)`` evaluated.
    """

    factor: float
    error: float
    error_at_one: float
    observers: int
    points: tuple[tuple[float, float], ...]

    @property
    def evaluations(self) -> int:
        return len(self.points)


def activation_observers(prepared: nn.Module) -> dict[str, ActivationObserverMixin]:
    """The REQuant activation observers of a prepared model, by module name."""
    return {n: m for n, m in prepared.named_modules() if isinstance(m, ActivationObserverMixin)}


def _converter(flow: Flow) -> Callable[..., nn.Module]:
    """``convert_fx`` or torchao's ``convert_pt2e``."""
    if flow == "fx":
        from torch.ao.quantization.quantize_fx import convert_fx

        return convert_fx
    if flow == "pt2e":
        pt2e = require("torchao.quantization.pt2e.quantize_pt2e", "flow='pt2e'")
        convert: Callable[..., nn.Module] = pt2e.convert_pt2e
        return convert
    raise ValueError(f"unknown flow {flow!r}: valid values are ['fx', 'pt2e']")


def _outputs(model: nn.Module, batches: Sequence[Tensor]) -> list[Tensor]:
    with torch.no_grad():
        outs = [model(x) for x in batches]
    for y in outs:
        if not isinstance(y, Tensor):
            raise TypeError(f"refine_activation_ranges needs a model whose forward returns one tensor, got "
                            f"{type(y).__name__}: wrap it so that forward returns the output to compare")
    return [y.detach().float() for y in outs]


def refine_activation_ranges(
    prepared: nn.Module, reference: nn.Module, batches: Sequence[Tensor], *, flow: Flow = "fx",
    lower: float = 0.8, tol: float = 0.01,
) -> RangeRefinement:
    """Fit one range factor for all REQuant activation observers of ``prepared`` on the output
    error against ``reference`` (module docstring); sets it on the observers (in place).

    Args:
        prepared: a model after ``prepare_fx`` / ``prepare_pt2e`` with REQuant activation observers
            (``get_requant_qconfig_mapping()`` / ``get_requant_quantizer()``), already calibrated.
        reference: the float model (run in eval mode under ``torch.no_grad``; its mode is restored
            afterwards, so batch-norm statistics are not touched).
        batches: the inputs to measure the error on (typically the calibration batches).
        flow: ``"fx"`` (``convert_fx``) or ``"pt2e"`` (``convert_pt2e``).
        lower: smallest factor searched, in (0, 1).
        tol: search resolution in ``beta``.
    """
    if not (0.0 < lower < 1.0):
        raise ValueError(f"lower must be in (0, 1), got {lower!r}")
    if len(batches) == 0:
        raise ValueError("refine_activation_ranges needs at least one batch")
    convert = _converter(flow)
    observers = activation_observers(prepared)
    if not observers:
        raise ValueError("the model has no REQuant activation observers: prepare it with "
                         "get_requant_qconfig_mapping() (FX) or get_requant_quantizer() (pt2e)")
    empty = [n for n, m in observers.items() if m.histogram().empty]
    if empty:
        raise ValueError(f"activation observer {empty[0]!r} has seen no data: run the calibration "
                         "batches through the prepared model before refining")
    was_training = reference.training
    reference.eval()
    try:
        target = _outputs(reference, batches)
    finally:
        reference.train(was_training)
    n_values = sum(t.numel() for t in target)

    def set_factor(beta: float) -> None:
        for m in observers.values():
            m.set_range_factor(beta)

    def error(beta: float) -> float:
        set_factor(beta)
        with warnings.catch_warnings():  # torch's own deprecation notice when copying an exported graph
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            twin = copy.deepcopy(prepared)
        quantized = convert(twin)
        got = _outputs(quantized, batches)
        return float(sum(((g - t) ** 2).sum() for g, t in zip(got, target, strict=True))) / n_values

    res = golden_section(error, lower, 1.0, tol=tol)
    set_factor(res.x)
    at_one = next(fx for x, fx in res.points if x == 1.0)
    return RangeRefinement(res.x, res.fx, at_one, len(observers), res.points)


__all__ = ["RangeRefinement", "activation_observers", "refine_activation_ranges"]
