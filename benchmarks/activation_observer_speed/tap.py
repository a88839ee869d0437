"""The tap observer: every activation tensor goes to a HistogramObserver and a REQuantObserver per
range, timed in alternating order; then the output-range MSE of each on calibration and held-out data."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.ao.quantization import QConfig, QConfigMapping
from torch.ao.quantization.observer import (
    HistogramObserver,
    PerChannelMinMaxObserver,
    UniformQuantizationObserverBase,
)

from requant_plugin.observers import DEFAULT_SAMPLE_SIZE, REQuantObserver

RANGES = ((0, 127), (0, 15))
NAMES = ("histogram", "requant")


class Tap(UniformQuantizationObserverBase):
    """Feeds every tensor to a HistogramObserver and a REQuantObserver per range, timing them.

    ``mode="calibrate"``: observe (timed); ``mode="evaluate"``: accumulate each observer's
    fake-quantization squared error on the tensor (after ``freeze()`` computed the qparams).
    """

    #: ``REQuantObserver(sample_size=...)`` of every tap (``--sample-size``; None bins every value)
    sample_size: int | None = DEFAULT_SAMPLE_SIZE
    #: also feed an exactly binning REQuantObserver per range, untimed (``--vs-exact``)
    reference = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(dtype=torch.quint8, quant_min=0, quant_max=127)
        self.obs = torch.nn.ModuleDict()
        for lo, hi in RANGES:
            self.obs[f"histogram_{hi}"] = HistogramObserver(quant_min=lo, quant_max=hi)
            self.obs[f"requant_{hi}"] = REQuantObserver(quant_min=lo, quant_max=hi, sample_size=self.sample_size)
        self.ref = torch.nn.ModuleDict({f"exact_{hi}": REQuantObserver(quant_min=lo, quant_max=hi, sample_size=None)
                                        for lo, hi in RANGES} if self.reference else {})
        self.wall_s = dict.fromkeys(self.obs, 0.0)
        self.cpu_s = dict.fromkeys(self.obs, 0.0)
        self.qp_wall: dict[str, float] = {}
        self.qparams: dict[str, tuple[float, int]] = {}
        self.sse = {"calib": dict.fromkeys(self.obs, 0.0), "test": dict.fromkeys(self.obs, 0.0)}
        self.count = {"calib": 0, "test": 0}
        self.mode = "calibrate"
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "calibrate":
            order = list(self.obs) if self.calls % 2 == 0 else list(self.obs)[::-1]
            for key in order:
                w0, c0 = time.perf_counter(), time.process_time()
                observer: Any = self.obs[key]
                observer(x)
                self.wall_s[key] += time.perf_counter() - w0
                self.cpu_s[key] += time.process_time() - c0
            for ref in self.ref.values():  # untimed
                ref(x)
            self.calls += 1
            return x
        split = self.mode
        xd = x.detach().double()
        for key, (scale, zp) in self.qparams.items():
            if key not in self.obs:
                continue
            lo, hi = RANGES[0] if key.endswith("127") else RANGES[1]
            xq = torch.fake_quantize_per_tensor_affine(x.detach().float(), scale, zp, lo, hi)
            self.sse[split][key] += float(((xq.double() - xd) ** 2).sum())
        self.count[split] += x.numel()
        return x

    def freeze(self) -> None:
        for key, ref in self.ref.items():
            scale, zp = ref.calculate_qparams()  # type: ignore[operator]
            self.qparams[key] = (float(scale), int(zp))
        for key, obs in self.obs.items():
            w0 = time.perf_counter()
            scale, zp = obs.calculate_qparams()  # type: ignore[operator]
            self.qp_wall[key] = time.perf_counter() - w0
            self.qparams[key] = (float(scale), int(zp))

    def calculate_qparams(self, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        observer: Any = self.obs["requant_127"]
        return observer.calculate_qparams()


def collect(model: torch.nn.Module, calib: list[torch.Tensor], test: list[torch.Tensor]) -> list[Tap]:
    """Prepare ``model`` with a tap at every activation point, calibrate, freeze, accumulate the MSE."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    mapping = QConfigMapping().set_global(QConfig(
        activation=Tap, weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                                  qscheme=torch.per_channel_symmetric)))
    prepared = prepare_fx(model.eval(), mapping, (calib[0],))
    taps = [m for m in prepared.modules() if isinstance(m, Tap)]
    with torch.no_grad():
        for x in progress(calib, "calibrate"):
            prepared(x)
        for t in taps:
            t.freeze()
        for split, data in (("calib", calib), ("test", test)):
            for t in taps:
                t.mode = split
            for x in progress(data, f"mse {split}"):
                prepared(x)
    return taps


def progress(it: Sequence[Any], desc: str) -> Any:
    """A transient tqdm bar on stderr."""
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, file=sys.stderr, leave=False)


def summarise(taps: list[Tap], n_batches: int) -> dict[str, Any]:
    """Per range: time per batch (wall/CPU), speed-ups, qparams time and the MSE sums and ratios."""
    out: dict[str, Any] = {"points": len(taps), "batches": n_batches}
    for _, hi in RANGES:
        h, r = f"histogram_{hi}", f"requant_{hi}"
        row: dict[str, Any] = {}
        for name, key in (("histogram", h), ("requant", r)):
            row[f"{name}_wall_ms"] = 1000 * sum(t.wall_s[key] for t in taps) / n_batches
            row[f"{name}_cpu_ms"] = 1000 * sum(t.cpu_s[key] for t in taps) / n_batches
            row[f"{name}_qparams_ms"] = 1000 * sum(t.qp_wall[key] for t in taps)
        row["speedup_wall"] = row["histogram_wall_ms"] / row["requant_wall_ms"]
        row["speedup_cpu"] = row["histogram_cpu_ms"] / row["requant_cpu_ms"]
        for split in ("calib", "test"):
            hs = np.array([t.sse[split][h] / t.count[split] for t in taps])
            rs = np.array([t.sse[split][r] / t.count[split] for t in taps])
            row[f"{split}_mse_histogram"] = float(hs.sum())
            row[f"{split}_mse_requant"] = float(rs.sum())
            row[f"{split}_median_ratio"] = float(np.median(rs / np.maximum(hs, 1e-30)))
            row[f"{split}_requant_not_worse"] = int(np.sum(rs <= hs * (1 + 1e-9)))
        if taps[0].reference:  # scale of each observer relative to the exactly binned REQuant's
            for name, key in (("histogram", h), ("requant", r)):
                dev = np.array([abs(t.qparams[key][0] / t.qparams[f"exact_{hi}"][0] - 1.0) for t in taps])
                row[f"{name}_vs_exact"] = {"mean": float(dev.mean()), "max": float(dev.max()),
                                           "over_1pct": int(np.sum(dev > 0.01))}
        out[f"0..{hi}"] = row
    return out
