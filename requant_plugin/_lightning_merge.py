"""Distributed merge of the Lightning callback: all-gather per-rank observer states, merge them in rank order."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._lightning_flows import _observers


def _finite_range(state: Mapping[str, Tensor]) -> bool:
    lo, hi = state.get("min_val"), state.get("max_val")
    return (isinstance(lo, Tensor) and isinstance(hi, Tensor) and lo.numel() > 0
            and bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all()))


def _merge_histograms(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor] | None:
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


_STREAMING_KEYS = frozenset({"hist_meta", "hist_count", "hist_sum", "hist_sumsq"})


def _merge_streaming(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """REQuant activation observers: merge their exact :class:`StreamingHistogram` states.

    Buffers (see ``requant_plugin.observers.REQuantObserver``): ``hist_meta`` = (width, offset,
    min, max, bins), ``hist_count``/``hist_sum``/``hist_sumsq`` per bin, ``min_val``/``max_val``.
    Counts merge exactly (bins stay anchored at zero, widths are powers of two apart).
    """
    from .core import StreamingHistogram

    hists = []
    for s in states:
        meta = s["hist_meta"].detach().cpu().double().numpy()
        if meta[0] == 0.0 or s["hist_count"].numel() == 0:
            continue
        hists.append(StreamingHistogram.from_state({
            "meta": meta, "count": s["hist_count"].cpu().double().numpy(),
            "sum": s["hist_sum"].cpu().double().numpy(), "sumsq": s["hist_sumsq"].cpu().double().numpy(),
        }))
    out = dict(states[0])
    if not hists:
        return out
    acc = hists[0].copy()
    for h in hists[1:]:
        acc.merge(h)
    st = acc.state()
    for name, key in (("hist_meta", "meta"), ("hist_count", "count"), ("hist_sum", "sum"),
                      ("hist_sumsq", "sumsq")):
        out[name] = torch.from_numpy(st[key]).to(states[0][name].dtype)
    out["min_val"] = torch.tensor(acc.min, dtype=states[0]["min_val"].dtype)
    out["max_val"] = torch.tensor(acc.max, dtype=states[0]["max_val"].dtype)
    return out


def _merge_observer(obs: nn.Module, states: list[dict[str, Tensor]], kind: str = "activation") -> str:
    """Merge per-rank observer states (rank order) into ``obs``; returns the method used.

    Weight observers (pt2e) saw the same DDP-synchronised weights on every rank: rank 0's
    state is taken as is.
    """
    cls = type(obs).__name__
    if kind == "weight":
        obs.load_state_dict(states[0])
        return "weight"
    if set(states[0]) >= _STREAMING_KEYS:
        obs.load_state_dict(_merge_streaming(states))
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
        merged = _merge_histograms(states)
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


def _distributed(trainer: Any) -> bool:
    if trainer is not None and int(getattr(trainer, "world_size", 1)) <= 1:
        return False
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def _sync_observers(prepared: nn.Module, trainer: Any) -> dict[str, str]:
    """All-gather every observer's state and merge them identically on every rank."""
    obs = _observers(prepared)
    local = {name: {k: v.detach().to("cpu") for k, v in o.state_dict().items()}
             for name, o, _, _ in obs}
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, local)
    methods: dict[str, str] = {}
    for name, o, label, kind in obs:
        methods[f"{kind}:{label}"] = _merge_observer(o, [g[name] for g in gathered], kind)
    fallback = sorted(k for k, v in methods.items() if v == "rank0")
    if fallback and torch.distributed.get_rank() == 0:
        warnings.warn(
            f"REQuantCalibration: no merge rule for the observers of {fallback}; every rank uses "
            "rank 0's statistics for them (give the observer a merge(other) method to merge)",
            RuntimeWarning, stacklevel=2,
        )
    return methods
