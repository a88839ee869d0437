"""``estimate_range``: REQuant on a torch tensor, configured by a :class:`~.spec.RangeSpec`.

The torch-facing adapter over :mod:`requant_plugin.core`: it validates the tensor, lays it out
as rows (one per tensor, or one per channel along the granularity's axis), runs the NumPy search
on the CPU (row blocks on ``torch.get_num_threads()`` threads; the result does not depend on the
thread count) and hands back torch tensors on the input's device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core import Grid, RowEstimate, estimate_rows
from ..options import PerChannel
from .result import RangeEstimate
from .rows import check_tensor, rows_of
from .spec import RangeSpec, range_spec
from .threads import map_blocks

__all__ = ["estimate_range"]


def estimate_range(
    w: torch.Tensor, spec: RangeSpec | int | None = None, *, name: str = "tensor", **options: Any
) -> RangeEstimate:
    """REQuant range estimation: ``alpha* = argmin_{alpha in (0, 1]} L(alpha)``.

    ``L(alpha) = mean((w - w_hat(alpha))**2)`` where ``w_hat`` quantizes ``T(w)`` on a uniform
    grid whose range is the min-max range scaled by ``alpha`` (``[alpha*min, alpha*max]``
    asymmetric, ``+-alpha*max|w|`` symmetric). ``space="sqrt"`` uses
    ``T(w) = sign(w) * (|w| / m) ** p`` (``p = 1/2``: REQuant's sign(w)*sqrt|w|), a grid
    that is non-uniform in ``w``. ``search="golden"`` is the fast convexity-aware search,
    ``"grid"`` the dense reference over ``grid_points`` values of alpha, ``"minmax"`` pins
    ``alpha = 1`` (plain min-max ranges).

    Args:
        w: floating-point tensor (any device; searched in float32/64 on the CPU).
        spec: a :class:`RangeSpec` (default ``RangeSpec()``: 8 bits, asymmetric, per tensor,
            uniform, golden), or the bit width 2..8 (``estimate_range(w, 4)``).
        name: used in error messages (for example the layer name).
        **options: :class:`RangeSpec` fields, which win over ``spec`` (``bits``, ``symmetric``,
            ``granularity``, ``space``, ``search``, ``p``, ``loss_space``, ``convention``,
            ``quant_min``/``quant_max``, ``grid_points``), and the legacy ``per_channel=`` /
            ``ch_axis=`` (``granularity=PerChannel(ch_axis)``).

    Raises:
        TypeError: ``w`` is not a floating-point tensor; an unknown option.
        ValueError: NaN/Inf values, unknown space/search/loss space, bits outside 2..8.
    """
    check_tensor(w, name)
    cfg = range_spec(spec, **options)
    grid = cfg.grid()
    per_channel = cfg.per_channel and w.dim() > 0
    ch_axis = cfg.ch_axis
    if per_channel and not -w.dim() <= ch_axis < w.dim():
        raise ValueError(f"{name}: ch_axis={ch_axis} is out of range for a {w.dim()}-D tensor")
    ch_axis = ch_axis % max(w.dim(), 1)
    rows = rows_of(w, per_channel, ch_axis)
    if rows.size and not np.isfinite(rows).all():
        bad = int((~np.isfinite(rows)).sum())
        raise ValueError(
            f"{name} has {bad} NaN/Inf values: REQuant needs finite weights; fix or skip this "
            "layer (for example overrides={name!r: {'skip': True}})"
        )
    n_rows = rows.shape[0] if rows.size else (w.shape[ch_axis] if per_channel else 1)
    est = None if rows.size == 0 else estimate_rows(
        rows, grid, p=cfg.exponent, loss_space=cfg.loss_space, search=cfg.search, grid_points=cfg.grid_points,
        run_blocks=map_blocks,
    )
    return _estimate(est, w, cfg, grid, PerChannel(ch_axis) if per_channel else None, n_rows)


def _estimate(
    est: RowEstimate | None, w: torch.Tensor, cfg: RangeSpec, grid: Grid, channels: PerChannel | None, n_rows: int
) -> RangeEstimate:
    """The :class:`RangeEstimate` of the row search ``est`` (``None``: an empty tensor, which gets
    one neutral range per row: alpha 1, mse 0, scale 1, the grid's zero point)."""
    if est is None:
        one = np.ones(n_rows)
        alpha, scale, mse = one, one.copy(), np.zeros(n_rows)
        zp = np.full(n_rows, grid.symmetric_zero_point if cfg.symmetric else grid.quant_min, np.int64)
        m, evaluations = one.copy(), 0
        clip_lo, clip_hi = np.zeros(n_rows), np.zeros(n_rows)
    else:
        alpha, scale, zp, mse = est.alpha, est.scale, est.zero_point, est.mse
        m = est.transform.m if not est.transform.is_identity else np.ones(n_rows)
        evaluations = est.evaluations
        clip_lo, clip_hi = est.clip_range()
    dev = w.device

    def t(a: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        out = torch.as_tensor(np.asarray(a), dtype=dtype, device=dev)
        return out if channels is not None else out.reshape(())

    return RangeEstimate(
        alpha=t(alpha), scale=t(scale), zero_point=t(zp, torch.int64),
        quant_min=grid.quant_min, quant_max=grid.quant_max, mse=t(mse), evaluations=evaluations,
        space=cfg.space.value, p=cfg.exponent, m=t(m), per_channel=channels is not None,
        ch_axis=channels.axis if channels is not None else 0,
        symmetric=cfg.symmetric, clip_min=t(clip_lo), clip_max=t(clip_hi), convention=cfg.convention.value,
    )
