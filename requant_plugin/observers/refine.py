"""Network-level refinement of REQuant activation ranges: one shared factor, fitted on the output error.

REQuant picks each activation range to minimise that tensor's own quantization MSE. The network's
output error is lowest somewhat below those ranges (measured on the shared CIFAR ResNets at W8A8:
about 5 % below, see ``docs/observers-results.md``, section "W8A8 output error"). This step
searches one factor ``beta`` in ``[lower, 1]``, shared by every REQuant activation observer of a
calibrated model, that minimises the mean squared error between the converted model's outputs and
the float model's on the first ``images`` calibration images (default 256, whole batches):

    beta* = argmin_beta  (1 / N) * sum_x || Q_beta(x) - F(x) ||**2

with golden-section search (:func:`requant_plugin.core.scalar_search.golden_section`; ``beta = 1``
is always evaluated, so the result is never worse than the plain REQuant ranges on those images).
It needs no labels. Each evaluation runs those batches through the model as converted at that ``beta``,
about eight in all (``tol=0.02``): for FX a converted copy; for pt2e the prepared graph with every observer
fake-quantizing (:func:`simulated`), which computes the converted graph's numbers without a copy or a
conversion (checked once on the first batch against one conversion, bit for bit; a conversion per
evaluation otherwise). Each observer's own alpha search runs once, before the first evaluation.
The chosen ``beta`` is stored in each observer's ``range_factor`` buffer, so ``convert_fx`` /
``convert_pt2e`` and ``state_dict`` carry it.

Then (``layer_factors``; by default for FX, opt-in for pt2e) a second stage gives each observer its own factor
``beta_i = min(1, c * beta)`` with ``c`` from ``layer_factors``, by one sweep of coordinate descent
in graph order on the output error of a simulation over the first ``layer_batches`` of those batches
(:func:`simulated`: every observer of the prepared model fake-quantizes what it sees with its current
parameters, no conversion per candidate; for pt2e graphs that is exactly what the converted graph
computes, since pt2e routes the weights through their observers too; FX weights stay float in it). The
per-observer factors are kept only if the converted model's output error on those images is lower
than with the shared ``beta``.

Usage (FX; ``flow="pt2e"`` for ``prepare_pt2e`` models)::

    prepared = prepare_fx(model, get_requant_qconfig_mapping(), example)
    for x in calib: prepared(x)
    result = refine_activation_ranges(prepared, model, calib)   # sets range_factor in place
    quantized = convert_fx(prepared)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..core.scalar_search import golden_section
from ..deps import available, require
from ..range.fake_quant import fake_quant_per_tensor
from .activation import ActivationObserverMixin

Flow = Literal["fx", "pt2e"]
#: the per-observer multiples of the shared factor measured in ``benchmarks/refine_layers.py``
LAYER_FACTORS = (0.7, 0.8, 0.9, 1.1)


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
    layer_factors: dict[str, float] = field(default_factory=dict)  # per observer, when kept
    error_shared: float | None = None  # converted error with the shared factor, when a layer stage ran
    images: int = 0  # calibration images the errors were measured on

    @property
    def evaluations(self) -> int:
        return len(self.points)


def _fake_quant(obs: nn.Module) -> Callable[[Tensor], Tensor]:
    """``obs``'s fake quantization with its current parameters (recomputed when ``range_factor`` changes)."""
    memo: dict[str, object] = {}

    def forward(x: Tensor) -> Tensor:
        factor = float(getattr(obs, "range_factor", 1.0))
        if memo.get("factor") != factor:
            scale, zp = obs.calculate_qparams()  # type: ignore[operator]
            memo.clear()
            memo.update(factor=factor, scale=scale.float(), zp=zp.int())
        if isinstance(x, nn.Parameter) and memo.get("param") is x and memo.get("version") == x._version:
            return memo["out"]  # type: ignore[return-value]  # a weight: quantized once per factor
        scale, zp = memo["scale"], memo["zp"]
        assert isinstance(scale, Tensor) and isinstance(zp, Tensor)
        lo, hi = int(obs.quant_min), int(obs.quant_max)  # type: ignore[arg-type]
        if scale.numel() > 1:
            out = torch.fake_quantize_per_channel_affine(x, scale, zp, int(obs.ch_axis), lo, hi)  # type: ignore[arg-type]
        else:
            out = fake_quant_per_tensor(x, float(scale), int(zp), lo, hi)
        if isinstance(x, nn.Parameter):
            memo.update(param=x, version=x._version, out=out)
        return out

    return forward


def _observer_bases() -> tuple[type, ...]:
    """torch.ao's observer base and, when installed, torchao's (pt2e observers derive from that one)."""
    from torch.ao.quantization.observer import ObserverBase

    bases: list[type] = [ObserverBase]
    if available("torchao"):
        from torchao.quantization.pt2e.observer import ObserverBase as TorchaoBase

        bases.append(TorchaoBase)
    return tuple(bases)


@contextlib.contextmanager
def simulated(prepared: nn.Module) -> Iterator[nn.Module]:
    """``prepared`` with every observer (activations and, where the graph routes weights through
    them as pt2e does, weights) fake-quantizing instead of observing; restored on exit."""
    patched = [m for m in prepared.modules() if isinstance(m, _observer_bases())]
    for m in patched:
        m.forward = _fake_quant(m)  # type: ignore[method-assign]
    try:
        yield prepared
    finally:
        for m in patched:
            del m.forward


def activation_observers(prepared: nn.Module) -> dict[str, ActivationObserverMixin]:
    """The REQuant activation observers of a prepared model, by module name."""
    return {n: m for n, m in prepared.named_modules() if isinstance(m, ActivationObserverMixin)}


def _converter(flow: Flow) -> Callable[..., nn.Module]:
    """``convert_fx`` or torchao's ``convert_pt2e``."""
    if flow == "fx":
        from .lowering import convert_fx_lowered

        return convert_fx_lowered
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


@dataclass(frozen=True)
class RefineConfig:
    """How :func:`refine_activation_ranges` searches (validated when built).

    Attributes:
        flow: ``"fx"`` (``convert_fx``) or ``"pt2e"`` (``convert_pt2e``).
        lower: smallest shared factor searched, in (0, 1).
        tol: search resolution in ``beta`` (0.02 chose the same factor as 0.01 in 7 of 8 W4A4 cells of
            ``docs/dev-split.md``, section dev-refine-pt2e-explore, with two evaluations fewer).
        images: the error is measured on the first whole batches holding at least this many images
            (``None``: all); 256 of 512 gave the same dev-split error within seed noise at half the time
            (sections dev-refine-*).
        layer_factors: multiples of the shared factor each observer tries in the second stage
            (module docstring; empty: no second stage), e.g. :data:`LAYER_FACTORS`; ``None`` (the default):
            :data:`LAYER_FACTORS` for ``"fx"`` (W8A8 on the development split: KL to the float network
            lower than with the shared factor alone on each measured network, section dev-fx-layers), none for
            ``"pt2e"`` (mixed there at W4A4: opt-in).
        layer_batches: batches the second stage's simulation runs on, ``>= 1``.
    """

    flow: Flow = "fx"
    lower: float = 0.8
    tol: float = 0.02
    images: int | None = 256
    layer_factors: tuple[float, ...] | None = None
    layer_batches: int = 2

    def __post_init__(self) -> None:
        if self.flow not in ("fx", "pt2e"):
            raise ValueError(f"unknown flow {self.flow!r}: valid values are ['fx', 'pt2e']")
        if self.images is not None and (isinstance(self.images, bool) or not isinstance(self.images, int)
                                        or self.images < 1):
            raise ValueError(f"images must be an integer >= 1 or None (all batches), got {self.images!r}")
        if not (0.0 < self.lower < 1.0):
            raise ValueError(f"lower must be in (0, 1), got {self.lower!r}")
        factors = None if self.layer_factors is None else tuple(float(c) for c in self.layer_factors)
        if any(not c > 0.0 for c in factors or ()) or self.layer_batches < 1:
            raise ValueError(f"layer_factors must be positive and layer_batches >= 1, got {factors!r} "
                             f"and {self.layer_batches!r}")
        object.__setattr__(self, "layer_factors", factors)

    @property
    def factors(self) -> tuple[float, ...]:
        """The second stage's multiples for this flow: ``layer_factors``, or its default when ``None``."""
        if self.layer_factors is None:
            return LAYER_FACTORS if self.flow == "fx" else ()
        return self.layer_factors


def refine_activation_ranges(
    prepared: nn.Module, reference: nn.Module, batches: Sequence[Tensor], config: RefineConfig | None = None,
    **options: Any,
) -> RangeRefinement:
    """Fit one range factor for all REQuant activation observers of ``prepared`` on the output
    error against ``reference`` (module docstring); sets it on the observers (in place).

    Args:
        prepared: a model after ``prepare_fx`` / ``prepare_pt2e`` with REQuant activation observers
            (``get_requant_qconfig_mapping()`` / ``get_requant_quantizer()``), already calibrated.
        reference: the float model (run in eval mode under ``torch.no_grad``; its mode is restored
            afterwards, so batch-norm statistics are not touched).
        batches: the inputs to measure the error on (typically the calibration batches; the first
            ``config.images`` images of them).
        config: the search settings (default :class:`RefineConfig`).
        **options: :class:`RefineConfig` fields (``flow``, ``lower``, ``tol``, ``images``, ``layer_factors``,
            ``layer_batches``), which win over ``config``.
    """
    valid = [f.name for f in dataclasses.fields(RefineConfig)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"unknown refine option(s) {unknown}; valid: {valid}")
    cfg = dataclasses.replace(config or RefineConfig(), **options)
    if len(batches) == 0:
        raise ValueError("refine_activation_ranges needs at least one batch")
    batches = _leading(batches, cfg.images)
    convert = _converter(cfg.flow)
    observers = activation_observers(prepared)
    if not observers:
        raise ValueError("the model has no REQuant activation observers: prepare it with "
                         "get_requant_qconfig_mapping() (FX) or get_requant_quantizer() (pt2e)")
    empty = [n for n, m in observers.items() if m.histogram().empty]
    if empty:
        raise ValueError(f"activation observer {empty[0]!r} has seen no data: run the calibration "
                         "batches through the prepared model before refining")
    for m in observers.values():  # each alpha search runs here, once: every converted copy inherits its result
        m.calculate_qparams()
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

    exact = cfg.flow == "pt2e" and _simulation_is_exact(prepared, convert, batches[0])

    def model_error() -> float:
        if not exact:
            return _converted_error(prepared, convert, batches, target, n_values)
        with simulated(prepared) as sim:
            return _error(sim, batches, target, n_values)

    def error_at(beta: float) -> float:
        set_factor(beta)
        return model_error()

    res = golden_section(error_at, cfg.lower, 1.0, tol=cfg.tol)
    set_factor(res.x)
    at_one = next(fx for x, fx in res.points if x == 1.0)
    shared = RangeRefinement(res.x, res.fx, at_one, len(observers), res.points,
                             images=sum(_count(x) for x in batches))
    if not cfg.factors:
        return shared
    chosen = _layer_stage(prepared, observers, res.x, cfg.factors, batches[:cfg.layer_batches],
                          target[:cfg.layer_batches])
    for name, m in observers.items():
        m.set_range_factor(chosen[name])
    err = model_error()
    if err >= res.fx:  # the simulation's choice does not pay on the converted model: shared factor
        set_factor(res.x)
        return dataclasses.replace(shared, error_shared=res.fx)
    return dataclasses.replace(shared, error=err, error_shared=res.fx,
                               layer_factors={n: f for n, f in chosen.items() if f != res.x})


def _count(x: Tensor) -> int:
    """Images in the batch ``x`` (its first dimension; 1 for a scalar)."""
    return int(x.shape[0]) if x.dim() else 1


def _leading(batches: Sequence[Tensor], images: int | None) -> list[Tensor]:
    """The first whole batches holding at least ``images`` images (all of them for ``None``)."""
    if images is None:
        return list(batches)
    out: list[Tensor] = []
    seen = 0
    for x in batches:
        out.append(x)
        seen += _count(x)
        if seen >= images:
            break
    return out


def _converted(prepared: nn.Module, convert: Callable[..., nn.Module]) -> nn.Module:
    """``convert`` applied to a copy of ``prepared`` (``prepared`` stays as it is)."""
    with warnings.catch_warnings():  # torch's own deprecation notice when copying an exported graph
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        twin = copy.deepcopy(prepared)
    return convert(twin)


def _converted_error(prepared: nn.Module, convert: Callable[..., nn.Module], batches: Sequence[Tensor],
                     target: Sequence[Tensor], n_values: int) -> float:
    """Mean squared output error of the converted ``prepared`` (a copy) against ``target``."""
    return _error(_converted(prepared, convert), batches, target, n_values)


def _simulation_is_exact(prepared: nn.Module, convert: Callable[..., nn.Module], batch: Tensor) -> bool:
    """Whether :func:`simulated` ``prepared`` gives the converted copy's outputs on ``batch`` bit for bit
    (an observer the simulation cannot run, e.g. one that does not quantize, counts as no)."""
    want = _outputs(_converted(prepared, convert), [batch])[0]
    try:
        with simulated(prepared) as sim:
            got = _outputs(sim, [batch])[0]
    except Exception:  # any observer the simulation cannot run: convert per evaluation
        return False
    return got.shape == want.shape and bool(torch.equal(got, want))


def _error(model: nn.Module, batches: Sequence[Tensor], target: Sequence[Tensor], n_values: int) -> float:
    """``sum ||model(x) - t||^2 / n_values`` over the batches."""
    got = _outputs(model, batches)
    return float(sum(((g - t) ** 2).sum() for g, t in zip(got, target, strict=True))) / n_values


def _layer_stage(prepared: nn.Module, observers: dict[str, ActivationObserverMixin], shared: float,
                 factors: Sequence[float], batches: Sequence[Tensor], target: Sequence[Tensor]) -> dict[str, float]:
    """One sweep of coordinate descent over the observers (graph order): each keeps the factor
    ``min(1, c * shared)`` (``c`` in ``factors``) with the lowest simulated output error."""
    n_values = sum(t.numel() for t in target)
    chosen = dict.fromkeys(observers, shared)
    with simulated(prepared) as sim:
        def sim_error() -> float:
            return _error(sim, batches, target, n_values)

        best = sim_error()
        for name, m in observers.items():
            for c in factors:
                f = min(1.0, c * shared)
                if f == chosen[name]:
                    continue
                m.set_range_factor(f)
                e = sim_error()
                if e < best:
                    best, chosen[name] = e, f
            m.set_range_factor(chosen[name])
    return chosen


__all__ = [
    "LAYER_FACTORS", "RangeRefinement", "RefineConfig", "activation_observers", "refine_activation_ranges",
    "simulated",
]
