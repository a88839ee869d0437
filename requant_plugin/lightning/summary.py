"""Calibration summary of the callback: per-layer alpha/MSE rows, the Markdown table, and the
report (metrics to the trainer's loggers, the table to the log and, when verbose, stdout)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .flows import fx_weight_observers, quiet_torch_ao
from .trainer import is_global_zero

__all__ = ["PER_CHANNEL", "format_summary", "fx_weight_rows", "observer_row", "report", "summary_metrics"]

log = logging.getLogger("requant_plugin.lightning")

PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric,
                torch.per_channel_affine_float_qparams)
_SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)


def _alpha(scale: Tensor, zp: Tensor, qmin: int, qmax: int, lo: Tensor, hi: Tensor,
           symmetric: bool) -> float:
    """Mean over channels of (clipping-range width) / (observed range width, zero included)."""
    lo, hi = torch.clamp(lo.double(), max=0), torch.clamp(hi.double(), min=0)
    width = 2 * torch.maximum(-lo, hi) if symmetric else hi - lo
    clip = scale.double() * (qmax - qmin)
    ok = width > 0
    return float((clip[ok] / width[ok]).mean()) if bool(ok.any()) else 1.0


def _bits(qmin: int, qmax: int) -> int:
    return round(math.log2(qmax - qmin + 1))


def observer_row(obs: nn.Module, label: str, kind: str, x: Tensor) -> dict[str, Any] | None:
    """alpha and MSE of the observer's final qparams on a sample of what it saw."""
    try:
        scale, zp = obs.calculate_qparams()  # type: ignore[operator]
    except Exception:
        return None
    qmin, qmax = int(obs.quant_min), int(obs.quant_max)  # type: ignore[arg-type]
    qscheme = getattr(obs, "qscheme", torch.per_tensor_affine)
    x = x.float()
    if qscheme in PER_CHANNEL:
        axis = int(getattr(obs, "ch_axis", 0)) % max(x.dim(), 1)
        zp_c = zp.to(torch.int32) if not zp.is_floating_point() else zp.float()
        fq = torch.fake_quantize_per_channel_affine(x, scale.float(), zp_c, axis, qmin, qmax)
        dims = [d for d in range(x.dim()) if d != axis]
        lo, hi = x.amin(dim=dims), x.amax(dim=dims)
    else:
        fq = torch.fake_quantize_per_tensor_affine(x, float(scale.reshape(-1)[0]),
                                                   int(zp.reshape(-1)[0]), qmin, qmax)
        lo, hi = x.min().reshape(1), x.max().reshape(1)
        scale = scale.reshape(-1)[:1]
    obs_lo, obs_hi = getattr(obs, "min_val", None), getattr(obs, "max_val", None)
    if (isinstance(obs_lo, Tensor) and isinstance(obs_hi, Tensor) and obs_lo.numel() == lo.numel()
            and bool(torch.isfinite(obs_lo).all()) and bool(torch.isfinite(obs_hi).all())):
        lo, hi = obs_lo.reshape(lo.shape), obs_hi.reshape(hi.shape)
    symmetric = qscheme in _SYMMETRIC
    return {"layer": label, "tensor": kind, "bits": _bits(qmin, qmax),
            "alpha": _alpha(scale, zp, qmin, qmax, lo, hi, symmetric),
            "mse": float((fq - x).double().pow(2).mean())}


def fx_weight_rows(prepared: nn.Module) -> list[dict[str, Any]]:
    """alpha/MSE per FX weight, from the same weight observers ``convert_fx`` uses."""
    rows = []
    with quiet_torch_ao():
        for label, w, wobs in fx_weight_observers(prepared):
            wobs(w)
            row = observer_row(wobs, label, "weight", w)
            if row is not None:
                rows.append(row)
    return rows


def format_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of calibration rows: layer, tensor, bits, alpha, MSE."""
    lines = ["| layer | tensor | bits | alpha | MSE |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['layer']} | {r['tensor']} | {r['bits']} | {float(r['alpha']):.4f} | "
              f"{float(r['mse']):.3e} |" for r in rows]
    return "\n".join(lines)


def summary_metrics(rows: Sequence[Mapping[str, Any]], extra: Mapping[str, float]) -> dict[str, float]:
    """``extra`` plus the mean weight/activation MSE and alpha and ``requant/<tensor>/<layer>/{alpha,mse}``."""
    metrics: dict[str, float] = dict(extra)
    for kind in ("weight", "activation"):
        sel = [r for r in rows if r["tensor"] == kind]
        if sel:
            metrics[f"requant/mean_{kind}_mse"] = sum(float(r["mse"]) for r in sel) / len(sel)
            metrics[f"requant/mean_{kind}_alpha"] = sum(float(r["alpha"]) for r in sel) / len(sel)
    for r in rows:
        key = f"requant/{r['tensor']}/{r['layer']}"
        metrics[f"{key}/alpha"] = float(r["alpha"])
        metrics[f"{key}/mse"] = float(r["mse"])
    return metrics


def report(trainer: Any, state: Mapping[str, Any], mode: str, target_name: str, verbose: bool) -> None:
    """On global rank 0: log the calibration ``state``'s metrics to every logger of ``trainer``,
    the summary table to the ``requant_plugin.lightning`` log and, when ``verbose``, to stdout."""
    if not is_global_zero(trainer):
        return
    rows = state.get("summary", [])
    extra = {"requant/calibration_batches": float(state.get("batches", 0)),
             "requant/calibration_samples": float(state.get("samples", 0)),
             "requant/calibration_seconds": float(state.get("seconds", 0.0)),
             "requant/layers": float(len(rows))}
    metrics = summary_metrics(rows, extra)
    step = int(getattr(trainer, "global_step", 0) or 0) if trainer is not None else 0
    for logger in getattr(trainer, "loggers", None) or []:
        logger.log_metrics(metrics, step=step)
        logger.save()
    table = format_summary(rows)
    log.info("REQuant calibration (%s) of %s:\n%s", mode, target_name, table)
    if verbose:
        print(f"REQuant calibration summary (mode={mode}, module={target_name}):\n{table}")
