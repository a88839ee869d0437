"""REQuant's range search driven by the layer-OUTPUT error instead of the weight error.

For one layer with weight rows ``W`` (``(C, n)``) and input Gram matrix ``G`` (see
:mod:`.calibration`), :func:`search_layer_output` picks ``alpha`` minimising the mean output
MSE ``mean_c e_c^T G e_c`` with the same grid and transform as the weight objective
(:class:`requant_plugin.core.output_objective.OutputObjective`) and the same convexity-aware
search (bracketing scan + golden-section refinement + exact least-squares polish). Optionally

* ``p`` is a sequence: the transform exponent is searched too (the best ``p`` per layer);
* ``rounding="feedback"``: after the range is fixed, the codes are chosen column by column
  with error feedback (:func:`~requant_plugin.core.output_objective.error_feedback_round`);
  the grid, hence the uniform per-channel ranges, stay exactly those found by the search.

The result carries a :class:`~requant_plugin.RangeEstimate` describing the grid (uniform
ranges for ``p = 1``, the transform codebook otherwise), usable by the integrations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from ..core import Grid, PowerTransform, golden_search, grid_search
from ..core.coordinate import coordinate_descent_round, nearest_level
from ..core.damped import FEEDBACK_ORDERS, DampedFactor
from ..core.gram_factor import factor_gram
from ..core.output_objective import OutputObjective, error_feedback_round, output_mse
from ..core.refit import refit_terms
from ..core.search import minmax_search, scan_points
from ..options import Convention, Granularity, PerChannel, PerTensor, Rounding, Search, check_bits
from ..range import RangeEstimate
from .config import check_feedback_use, check_flag, check_p, check_sweeps, check_widen, translate_legacy
from .report import LayerReport

__all__ = [
    "ROUNDINGS", "LayerSolution", "OutputLayerReport", "OutputSearchConfig", "WidenedRounding",
    "configured_feedback_round", "feedback_round", "refit_rounding", "search_layer_output", "widened_feedback_round",
]

ROUNDINGS: tuple[str, ...] = tuple(Rounding.values())
#: The scan of the output search: 8 geometric points below 0.25, 24 linear ones on [0.25, 1].
OUTPUT_SCAN = scan_points(8, 24)


@dataclass(frozen=True)
class LayerSolution:
    """The quantized weight of one layer and the grid it lies on.

    Attributes:
        weight: fake-quantized weight (same shape, dtype and device as the input weight).
        estimate: the grid as a :class:`RangeEstimate` (``mse`` holds the output MSE of each
            range for nearest rounding).
        p: the transform exponent used (1 = uniform).
        output_mse: mean over channels of ``e_c^T G e_c`` of the returned weight.
        channel_output_mse: the same per channel, ``(C,)``.
        evaluations: ``alpha`` candidates evaluated (summed over the ``p`` tried).
    """

    weight: torch.Tensor
    estimate: RangeEstimate
    p: float
    output_mse: float
    channel_output_mse: np.ndarray
    evaluations: int


@dataclass(frozen=True)
class OutputLayerReport(LayerReport):
    """A :class:`LayerReport` plus what the calibration-data modes measured.

    Attributes:
        objective: ``"weight"`` or ``"output"`` (what chose ``alpha`` for this layer).
        output_mse: mean over channels of the layer-output MSE ``e_c^T G e_c`` of the final
            weight on the calibration data (``None`` without a Gram matrix).
        rel_output_mse: ``output_mse`` divided by the mean squared float output (bias excluded).
        p: transform exponent used (1 = uniform grid).
        bias_shift: mean ``|delta|`` added to the bias by bias correction (0 without).
        target_damp: the damp of the compensated target ``W*`` (``inputs="quantized"``; else ``None``).
        estimate: the grid of this layer (uniform ranges when ``p = 1``).
    """

    objective: str = "weight"
    output_mse: float | None = None
    rel_output_mse: float | None = None
    p: float = 1.0
    bias_shift: float = 0.0
    target_damp: float | None = None
    estimate: RangeEstimate | None = field(default=None, repr=False, compare=False)


def _check_p(p: float | Sequence[float]) -> list[float]:
    ps = [float(p)] if isinstance(p, (int, float)) else [float(v) for v in p]
    if not ps or any(not 0.0 < v <= 1.0 for v in ps):
        raise ValueError(f"transform exponent(s) p must lie in (0, 1], got {p!r}")
    return ps


def _estimate(
    obj: OutputObjective, alpha: np.ndarray, mse: np.ndarray, evaluations: int, *, symmetric: bool,
    convention: str, device: torch.device,
) -> RangeEstimate:
    scale = alpha * obj.s1
    lo, hi = obj.grid.clip_range(scale, obj.z)
    clip_lo = obj.transform.inverse(lo[:, None])[:, 0]
    clip_hi = obj.transform.inverse(hi[:, None])[:, 0]

    def t(a: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        out = torch.as_tensor(np.asarray(a), dtype=dtype, device=device)
        return out if obj.per_channel else out.reshape(())

    p = obj.transform.p
    return RangeEstimate(
        alpha=t(alpha), scale=t(scale), zero_point=t(obj.z, torch.int64),
        quant_min=obj.grid.quant_min, quant_max=obj.grid.quant_max, mse=t(mse),
        evaluations=evaluations, space="uniform" if p == 1.0 else "sqrt", p=p,
        m=t(obj.transform.m if p != 1.0 else np.ones(obj.rows)), per_channel=obj.per_channel,
        ch_axis=0, symmetric=symmetric, clip_min=t(clip_lo), clip_max=t(clip_hi),
        convention=convention,
    )


def feedback_round(
    weight: torch.Tensor, gram: np.ndarray, estimate: RangeEstimate, *, order: str = "energy",
    damp: float = 0.01, factors: Sequence[DampedFactor] | None = None,
) -> torch.Tensor:
    """Error-feedback rounding of ``weight`` (output channels on axis 0) on the grid of
    ``estimate`` (any ``RangeEstimate``: per tensor or per channel, uniform or transform).

    Each group of output channels of a grouped convolution uses its own Gram matrix. Returns
    the fake-quantized weight (same shape, dtype, device); every value lies on the grid. ``factors``:
    the groups' :class:`~requant_plugin.core.damped.DampedFactor` of ``gram`` (made with ``damp`` and
    ``order``), when the caller has them already.
    """
    return widened_feedback_round(weight, gram, estimate, (1.0,), order=order, damp=damp, factors=factors).weight


class WidenedRounding(NamedTuple):
    """What :func:`widened_feedback_round` returns: the rounded weight, the grid it lies on, and each
    output channel's error ``e_c^T G e_c`` ``(C,)``."""

    weight: torch.Tensor
    estimate: RangeEstimate
    channel_output_mse: np.ndarray


def widened_feedback_round(
    weight: torch.Tensor, gram: np.ndarray, estimate: RangeEstimate, widen: Sequence[float], *,
    order: str = "energy", damp: float = 0.01, factors: Sequence[DampedFactor] | None = None, sweeps: int = 0,
) -> WidenedRounding:
    """:func:`feedback_round` on the grid of ``estimate`` with its scale times each of ``widen``
    (``>= 1``), keeping per channel (per tensor for a per-tensor estimate) the candidate with the
    lowest output error ``e_c^T G e_c``; returns the weight, the grid it lies on and the errors.

    The feedback moves the columns not yet rounded, possibly past the searched range, so a wider
    range can lose less. The candidates share one Cholesky factor (their rows are stacked). ``sweeps``:
    coordinate-descent sweeps on the kept rounding (:func:`~requant_plugin.core.coordinate.coordinate_descent_round`).
    """
    if estimate.per_channel and estimate.ch_axis != 0:
        raise ValueError("feedback rounding needs the output channels on axis 0")
    f = np.asarray(check_widen(widen))
    k = f.size
    w2 = weight.detach().double().reshape(weight.shape[0], -1).cpu().numpy()
    c = w2.shape[0]

    def per_channel(t: torch.Tensor) -> np.ndarray:
        a = t.detach().double().cpu().numpy().reshape(-1)
        return np.broadcast_to(a, (c,)).copy() if a.size == 1 else a

    s, z, m = per_channel(estimate.scale), per_channel(estimate.zero_point), per_channel(estimate.m)
    lo, hi = estimate.quant_min, estimate.quant_max
    g = np.asarray(gram, dtype=np.float64)
    g = g[None] if g.ndim == 2 else g
    per = c // g.shape[0]
    if factors is not None and len(factors) != g.shape[0]:
        raise ValueError(f"factors must hold one DampedFactor per group ({g.shape[0]}), got {len(factors)}")
    cand = np.empty((k, *w2.shape))  # (K, C, n): every factor's rounded weight
    for gi in range(g.shape[0]):  # one Gram matrix per group of output channels
        sl = slice(gi * per, (gi + 1) * per)
        sk = (f[:, None] * s[sl][None]).reshape(-1)  # the K candidates' rows stacked, factor-major
        zk, tg = np.tile(z[sl], k), PowerTransform(estimate.p, np.tile(m[sl], k))

        def quantize(_j: int, v: np.ndarray, sk: np.ndarray = sk, zk: np.ndarray = zk,
                     tg: PowerTransform = tg) -> np.ndarray:
            q = np.clip(np.rint(tg.forward(v) / sk) + zk, lo, hi)
            return tg.inverse(sk * (q - zk))

        out = error_feedback_round(np.tile(w2[sl], (k, 1)), g[gi], quantize, damp=damp, order=order,
                                   factor=None if factors is None else factors[gi])
        cand[:, sl] = out.reshape(k, per, -1)
    g32 = g.astype(np.float32)
    err = np.stack([output_mse(w2, cand[i], g32, single=True) for i in range(k)])  # (K, C): e_c^T G e_c
    pick = err.argmin(axis=0) if estimate.per_channel else np.full(c, int(err.sum(axis=1).argmin()))
    wq = cand[pick, np.arange(c)]
    if sweeps:  # one call per group, or one for all channels when each group has one (depthwise)
        parts = [slice(None)] if per == 1 else [slice(gi * per, (gi + 1) * per) for gi in range(g.shape[0])]
        for gi, sl in enumerate(parts):
            near = nearest_level(s[sl] * f[pick[sl]], z[sl], PowerTransform(estimate.p, m[sl]), lo, hi)
            gram_sl = g if per == 1 else g[gi]
            wq[sl] = coordinate_descent_round(w2[sl], wq[sl], gram_sl, near, sweeps=sweeps)
        err[pick, np.arange(c)] = output_mse(w2, wq, g32, single=True)
    new = torch.as_tensor(wq.reshape(weight.shape), dtype=weight.dtype, device=weight.device)
    if k == 1:  # the searched grid only: nothing to choose
        return WidenedRounding(new, estimate, err[0])
    chosen = f[pick] if estimate.per_channel else f[pick[:1]]
    return WidenedRounding(new, _scaled(estimate, chosen, err[pick, np.arange(c)]), err[pick, np.arange(c)])


def _scaled(estimate: RangeEstimate, factor: np.ndarray, channel_mse: np.ndarray) -> RangeEstimate:
    """``estimate`` with its scale (and ``alpha``) times ``factor`` (per channel, or one per tensor) and the
    errors ``channel_mse`` (``(C,)``; per tensor: their mean); the clipping range scales by ``factor**(1/p)``."""

    def times(t: torch.Tensor, x: np.ndarray) -> torch.Tensor:
        return t * torch.as_tensor(x, dtype=t.dtype, device=t.device).reshape(t.shape)

    mse = channel_mse if estimate.per_channel else channel_mse.mean(keepdims=True)
    clip = factor ** (1.0 / estimate.p)  # T^-1 is homogeneous of degree 1/p
    return dataclasses.replace(
        estimate, alpha=times(estimate.alpha, factor), scale=times(estimate.scale, factor),
        clip_min=times(estimate.clip_min, clip), clip_max=times(estimate.clip_max, clip),
        mse=torch.as_tensor(mse, dtype=estimate.mse.dtype, device=estimate.mse.device).reshape(estimate.mse.shape),
    )


def refit_rounding(weight: torch.Tensor, gram: np.ndarray, rounding: WidenedRounding) -> WidenedRounding:
    """``rounding`` (of ``weight``, output channels on axis 0) with each channel's grid, per tensor the tensor's,
    scaled by the least-squares factor of its codes (:func:`~requant_plugin.core.refit.refit_terms`): the same
    codes on the grid of scale ``lambda**p s``; its errors ``e_c^T G e_c`` never higher."""
    est = rounding.estimate
    w2 = weight.detach().double().reshape(weight.shape[0], -1).cpu().numpy()
    wq = rounding.weight.detach().double().reshape(w2.shape).cpu().numpy()
    terms = refit_terms(w2, wq, gram)
    lam = terms.scale(est.per_channel)
    wq = wq * lam[:, None]
    err = terms.error(rounding.channel_output_mse, lam)
    new = torch.as_tensor(wq.reshape(weight.shape), dtype=rounding.weight.dtype, device=rounding.weight.device)
    return WidenedRounding(new, _scaled(est, (lam if est.per_channel else lam[:1]) ** est.p, err), err)


def configured_feedback_round(
    weight: torch.Tensor, gram: np.ndarray, estimate: RangeEstimate, config: OutputSearchConfig,
    factors: Sequence[DampedFactor] | None = None,
) -> WidenedRounding:
    """:func:`widened_feedback_round` with the wider grids, order, damping and sweeps of ``config``, then
    :func:`refit_rounding` where ``config.feedback_refit``."""
    rounded = widened_feedback_round(weight, gram, estimate, config.feedback_widen, order=config.feedback_order,
                                     damp=config.feedback_damp, factors=factors, sweeps=config.feedback_sweeps)
    return refit_rounding(weight, gram, rounded) if config.feedback_refit else rounded


@dataclass(frozen=True)
class OutputSearchConfig:
    """How :func:`search_layer_output` searches one layer (strings accepted for the enums).

    Attributes:
        symmetric, convention: the grid (as in :func:`requant_plugin.estimate_range`).
        granularity: ``PerChannel()`` (one range per output channel, default) or ``PerTensor()``
            (legacy keyword ``per_channel``).
        p: transform exponent in ``(0, 1]``, or a tuple of exponents to choose from (per layer).
        search: ``"golden"`` (fast), ``"grid"`` (dense reference over ``grid_points``) or ``"minmax"``.
        rounding: ``"nearest"`` or ``"feedback"`` (error-feedback rounding on the same grid,
            per group of a grouped convolution).
        feedback_order, feedback_damp: column order (``"energy"``: largest ``G_jj`` first,
            measured better than ``"input"``) and relative damping of the feedback rounding.
        feedback_widen: scale factors ``>= 1`` tried for the feedback rounding
            (:func:`widened_feedback_round`; ``(1.0,)``: the searched range only; others need ``"feedback"``).
        feedback_sweeps: coordinate-descent sweeps after the feedback rounding (``0``: none; else needs ``"feedback"``).
        feedback_refit: then the least-squares scale of each channel's codes (needs ``"feedback"``).
    """

    symmetric: bool = False
    granularity: Granularity = field(default_factory=PerChannel)
    p: float | tuple[float, ...] = 1.0
    convention: Convention = Convention.TORCH
    search: Search = Search.GOLDEN
    rounding: Rounding = Rounding.NEAREST
    grid_points: int = 2000
    feedback_order: str = "energy"
    feedback_damp: float = 0.01
    feedback_widen: tuple[float, ...] = (1.0,)
    feedback_sweeps: int = 0
    feedback_refit: bool = False

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "feedback_sweeps", check_sweeps(self.feedback_sweeps))
        put(self, "convention", Convention.parse(self.convention))
        put(self, "search", Search.parse(self.search))
        put(self, "rounding", Rounding.parse(self.rounding))
        if not isinstance(self.granularity, (PerTensor, PerChannel)):
            raise ValueError(f"granularity must be PerTensor() or PerChannel(), got {self.granularity!r}")
        put(self, "p", check_p(self.p))
        put(self, "feedback_widen", check_widen(self.feedback_widen))
        refit = check_flag(self.feedback_refit, "feedback_refit")
        check_feedback_use(self.rounding, self.feedback_sweeps, self.feedback_widen, refit)
        if self.feedback_order not in FEEDBACK_ORDERS:
            raise ValueError(f"unknown feedback_order {self.feedback_order!r}: valid values are "
                             f"{list(FEEDBACK_ORDERS)}")

    @property
    def per_channel(self) -> bool:
        """True for ``PerChannel`` granularity."""
        return isinstance(self.granularity, PerChannel)


def search_layer_output(
    weight: torch.Tensor,
    gram: np.ndarray,
    bits: int = 4,
    config: OutputSearchConfig | None = None,
    *,
    factors: Sequence[DampedFactor] | None = None,
    gram_rows: int | None = None,
    **options: Any,
) -> LayerSolution:
    """Output-error REQuant for one layer whose output channels lie along axis 0: ``alpha``
    minimising ``mean_c e_c^T G e_c`` on the grid of ``config``.

    Args:
        weight: ``(C, ...)`` weight; row ``c`` flattened must match the Gram's input order
            (true for Linear and Conv weights with the im2col rows of :mod:`.calibration`).
        gram: ``(n, n)`` or ``(groups, n, n)`` Gram matrix ``X^T X / N``.
        bits: ``2..8``.
        config: the search settings (default :class:`OutputSearchConfig`).
        factors: for the feedback rounding, the groups' damped factors of ``gram`` (made with
            ``feedback_damp`` and ``feedback_order``) when the caller has them already.
        gram_rows: how many rows ``gram`` was accumulated from, when known (at least ``n``: a full-rank
            ``G``, whose low-rank form :func:`~requant_plugin.core.gram_factor.factor_gram` gives up on early).
        **options: :class:`OutputSearchConfig` fields (or the legacy ``per_channel``), which win.
    """
    cfg = config or OutputSearchConfig()
    if options:
        cfg = dataclasses.replace(cfg, **translate_legacy(options))
    grid = Grid.from_bits(check_bits(bits), symmetric=cfg.symmetric, convention=cfg.convention.value)
    w2 = weight.detach().double().reshape(weight.shape[0], -1).cpu().numpy()
    best: tuple[float, OutputObjective, np.ndarray, np.ndarray] | None = None
    evaluations = 0
    g = np.asarray(gram)
    one = g.ndim == 2 or g.shape[0] == 1
    factor = factor_gram(g.reshape(g.shape[-2:]), rows=gram_rows) if one and cfg.search is Search.GOLDEN else None
    for pv in _check_p(cfg.p):
        obj = OutputObjective(w2, gram, grid, p=pv, per_channel=cfg.per_channel, factor=factor)
        if cfg.search is Search.GRID:
            res = grid_search(obj, cfg.grid_points)
        elif cfg.search is Search.MINMAX:
            res = minmax_search(obj)
        else:
            res = golden_search(obj, n_brackets=2, tol=1e-3, max_iter=16, scan=OUTPUT_SCAN)
        evaluations += res.evaluations
        total = float(np.mean(res.mse))
        if best is None or total < best[0]:
            best = (total, obj, res.alpha, res.mse)
    assert best is not None
    _, obj, alpha, row_mse = best
    est = _estimate(obj, alpha, row_mse, evaluations, symmetric=cfg.symmetric, convention=cfg.convention.value,
                    device=weight.device)
    if cfg.rounding is Rounding.FEEDBACK:
        wq, est, ch_mse = configured_feedback_round(weight, gram, est, cfg, factors)
    else:
        w_hat = obj.dequantize(alpha)
        wq = torch.as_tensor(w_hat.reshape(weight.shape), dtype=weight.dtype, device=weight.device)
        ch_mse = output_mse(w2, w_hat, gram)
    return LayerSolution(
        weight=wq, estimate=est, p=obj.transform.p, output_mse=float(ch_mse.mean()),
        channel_output_mse=ch_mse, evaluations=evaluations,
    )
