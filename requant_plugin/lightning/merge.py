"""Distributed merge of the callback: all-gather per-rank observer states, merge them in rank order.

REQuant activation observers merge their streaming histograms exactly
(:func:`requant_plugin.calib.merge_states`, the calibrator contract's DDP merge), min/max observers take
the elementwise min/max, ``HistogramObserver`` states are re-binned onto the union range
(mass-conserving), observers with ``merge(other)`` merge themselves, weight observers keep rank
0's state; anything else falls back to rank 0's statistics with a warning.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..calib import merge_states
from .flows import observers

__all__ = ["merge_histograms", "merge_observer", "sync_observers"]


def _finite_range(state: Mapping[str, Tensor]) -> bool:
    lo, hi = state.get("min_val"), state.get("max_val")
    return (isinstance(lo, Tensor) and isinstance(hi, Tensor) and lo.numel() > 0
            and bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all()))


def merge_histograms(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor] | None:
    """Union of ``HistogramObserver`` states: every histogram re-binned onto ``[min, max]``.

    Each source bin's mass is split linearly over the target bins it overlaps (the CDF is
    interpolated at the new edges), so the total count is conserved exactly.
    """
    live = [s for s in states if _finite_range(s)]
    if not live:
        return None
    lo = min(float(s["min_val"]) for s in live)
    hi = max(float(s["max_val"]) for s in live)
    bins = int(live[0]["histogram"].numel())
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    merged = torch.zeros(bins, dtype=torch.float64)
    for s in live:
        hist = s["histogram"].double()
        a, b = float(s["min_val"]), float(s["max_val"])
        if b <= a or hi <= lo:
            idx = 0 if hi <= lo else min(int((a - lo) / (hi - lo) * bins), bins - 1)
            merged[idx] += hist.sum()
            continue
        src_edges = torch.linspace(a, b, hist.numel() + 1, dtype=torch.float64)
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), hist.cumsum(0)])
        pos = torch.searchsorted(src_edges, edges.clamp(a, b), right=True).clamp(1, hist.numel())
        x0, x1 = src_edges[pos - 1], src_edges[pos]
        frac = ((edges.clamp(a, b) - x0) / (x1 - x0)).clamp(0, 1)
        target_cdf = cdf[pos - 1] + frac * (cdf[pos] - cdf[pos - 1])
        merged += target_cdf[1:] - target_cdf[:-1]
    ref = live[0]
    return {**dict(ref), "histogram": merged.to(ref["histogram"].dtype),
            "min_val": torch.tensor(lo, dtype=ref["min_val"].dtype),
            "max_val": torch.tensor(hi, dtype=ref["max_val"].dtype)}


#: the buffers of a REQuant streaming-histogram calibrator (:class:`requant_plugin.calib.HistogramCalibrator`)
_STREAMING_KEYS = frozenset({"hist_meta", "hist_count", "hist_sum", "hist_sumsq"})


def merge_observer(obs: nn.Module, states: list[dict[str, Tensor]], kind: str = "activation") -> str:
    """Merge per-rank observer states (rank order) into ``obs``; returns the method used.

    Weight observers (pt2e) saw the same DDP-synchronised weights on every rank: rank 0's
    state is taken as is.
    """
    cls = type(obs).__name__
    if kind == "weight":
        obs.load_state_dict(states[0])
        return "weight"
    if set(states[0]) >= _STREAMING_KEYS:
        obs.load_state_dict(merge_states(states))  # exact: bins anchored at zero
        return "streaming"
    merge = getattr(obs, "merge", None)
    if callable(merge):
        acc = copy.deepcopy(obs)
        acc.load_state_dict(states[0])
        for s in states[1:]:
            other = copy.deepcopy(obs)
            other.load_state_dict(s)
            acc.merge(other)  # type: ignore[operator]
        obs.load_state_dict(acc.state_dict())
        return "merge"
    keys = set(states[0])
    if "Histogram" in cls and {"histogram", "min_val", "max_val"} <= keys:
        merged = merge_histograms(states)
        if merged is not None:
            obs.load_state_dict(merged)
        return "histogram"
    if {"min_val", "max_val"} <= keys:
        live = [s for s in states if _finite_range(s)]
        if not live:
            return "empty"
        lo = torch.stack([s["min_val"] for s in live])
        hi = torch.stack([s["max_val"] for s in live])
        moving = "MovingAverage" in cls
        out = dict(states[0])
        out["min_val"] = lo.mean(0) if moving else lo.min(0).values
        out["max_val"] = hi.mean(0) if moving else hi.max(0).values
        obs.load_state_dict(out)
        return "mean" if moving else "minmax"
    obs.load_state_dict(states[0])
    return "rank0"


def sync_observers(prepared: nn.Module, trainer: Any) -> dict[str, str]:
    """All-gather every observer's state and merge them identically on every rank."""
    obs = observers(prepared)
    local = {name: {k: v.detach().to("cpu") for k, v in o.state_dict().items()}
             for name, o, _, _ in obs}
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, local)
    methods: dict[str, str] = {}
    for name, o, label, kind in obs:
        methods[f"{kind}:{label}"] = merge_observer(o, [g[name] for g in gathered], kind)
    fallback = sorted(k for k, v in methods.items() if v == "rank0")
    if fallback and torch.distributed.get_rank() == 0:
        warnings.warn(
            f"REQuantCalibration: no merge rule for the observers of {fallback}; every rank uses "
            "rank 0's statistics for them (give the observer a merge(other) method to merge)",
            RuntimeWarning, stacklevel=2,
        )
    return methods
