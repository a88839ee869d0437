"""Test-time FP32-vs-quantized comparison: sums over the test batches (exact under DDP, summed
over ranks), then ``requant/fp32_acc``, ``requant/quant_acc``, ``requant/top1_agreement`` and
``requant/sqnr_db = 10 log10(sum f^2 / sum (f - q)^2)``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .trainer import distributed

__all__ = ["Comparison"]

_KEYS = ("n", "n_labeled", "fp32", "quant", "agree", "signal", "noise")


class Comparison:
    """Running sums of one ``trainer.test`` run: outputs compared, labelled samples, correct
    FP32/quantized top-1, top-1 agreements, signal and noise energy."""

    def __init__(self) -> None:
        self.sums = dict.fromkeys(_KEYS, 0.0)

    def update(self, float_out: Tensor | None, quant_out: Tensor | None,
               labels: Callable[[], Tensor | None]) -> None:
        """Add one batch: float and quantized outputs (same shape, else ignored); ``labels()``
        gives its class labels (asked only for ``[N, classes]`` outputs)."""
        if float_out is None or quant_out is None or float_out.shape != quant_out.shape:
            return
        f, q = float_out.detach().float(), quant_out.detach().float().to(float_out.device)
        c = self.sums
        c["signal"] += float(f.double().pow(2).sum())
        c["noise"] += float((f - q).double().pow(2).sum())
        if f.dim() == 2:
            fp, qp = f.argmax(1), q.argmax(1)
            c["n"] += fp.numel()
            c["agree"] += float((fp == qp).sum())
            y = labels()
            if y is not None and y.shape == fp.shape:
                y = y.to(fp.device)
                c["n_labeled"] += y.numel()
                c["fp32"] += float((fp == y).sum())
                c["quant"] += float((qp == y).sum())

    def metrics(self, trainer: Any) -> dict[str, float]:
        """The comparison metrics of the sums (all-reduced over ranks under DDP; a collective)."""
        keys = sorted(self.sums)
        totals = torch.tensor([self.sums[k] for k in keys], dtype=torch.float64)
        if distributed(trainer):
            dev = getattr(getattr(trainer, "strategy", None), "root_device", torch.device("cpu"))
            t = totals.to(dev)
            torch.distributed.all_reduce(t)
            totals = t.cpu()
        c = dict(zip(keys, totals.tolist(), strict=True))
        out = {}
        if c["n_labeled"] > 0:
            out["requant/fp32_acc"] = c["fp32"] / c["n_labeled"]
            out["requant/quant_acc"] = c["quant"] / c["n_labeled"]
        if c["n"] > 0:
            out["requant/top1_agreement"] = c["agree"] / c["n"]
        if c["signal"] > 0:
            out["requant/sqnr_db"] = 10 * math.log10(c["signal"] / max(c["noise"], 1e-30))
        return out
