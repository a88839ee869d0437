"""The streaming-histogram activation calibrator: exact per-bin moments, REQuant's alpha search at the end.

``collect`` adds each batch to a :class:`~requant_plugin.core.StreamingHistogram` kept in
buffers (``bins`` bins anchored at zero with exact per-bin count, sum and sum of squares; when a
batch falls outside the window the width doubles and bins merge exactly). A batch is sampled by
:func:`~requant_plugin.calib.sampling.sample_batch` (exact tails, weighted subsample) and binned
with NumPy on the CPU, torch elsewhere; ``exact=True`` bins every value in float64 through
``StreamingHistogram.update`` instead (the ONNX export). ``compute_range`` searches
``alpha = argmin L(alpha)`` on the histogram once per histogram and returns
``f * alpha * [min, max]`` (``f``: the ``range_factor`` buffer, 1 unless refined).

Buffers: ``min_val``/``max_val`` (running range, ``+-inf`` before data), ``hist_meta`` (width,
offset, min, max, bins), ``hist_count``, ``hist_sum``, ``hist_sumsq`` (empty before data) and
``range_factor``; :func:`histogram_from_state` / :meth:`HistogramCalibrator.store` convert them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ..core import Grid, StreamingHistogram
from ..core.histogram import fits, grown_window, moved_bins
from ..options import Search
from .base import Buffers, Calibrator, ClipRange
from .sampling import DEFAULT_SAMPLE_SIZE, BatchSample, bin_numpy, bin_torch, cat, sample_batch

__all__ = ["HIST_KEYS", "HistogramCalibrator", "histogram_from_state", "merge_states"]

#: the buffers that hold the histogram (``hist_meta`` first); ``min_val``/``max_val`` mirror its range
HIST_KEYS = ("hist_meta", "hist_count", "hist_sum", "hist_sumsq")
_STATS = ("hist_count", "hist_sum", "hist_sumsq")


def histogram_from_state(state: Mapping[str, Tensor], bins: int = 2048) -> StreamingHistogram:
    """The :class:`StreamingHistogram` held by calibrator buffers (an empty one before data)."""
    meta = state["hist_meta"].detach().cpu().double().numpy()
    if meta[0] == 0.0 or state["hist_count"].numel() == 0:
        return StreamingHistogram(bins)
    return StreamingHistogram.from_state({
        "meta": meta.copy(), "count": state["hist_count"].detach().cpu().double().numpy(),
        "sum": state["hist_sum"].detach().cpu().double().numpy(),
        "sumsq": state["hist_sumsq"].detach().cpu().double().numpy(),
    })


def merge_states(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Per-rank buffer states merged in order (exact: bins anchored at zero), as a state of ``states[0]``'s dtypes."""
    hists = [h for h in (histogram_from_state(s) for s in states) if not h.empty]
    out = dict(states[0])
    if not hists:
        return out
    out = {k: v.clone() for k, v in out.items()}  # the inputs are left untouched
    acc = hists[0].copy()
    for h in hists[1:]:
        acc.merge(h)
    HistogramCalibrator(out).store(acc)
    return out


class HistogramCalibrator(Calibrator[ClipRange]):
    """Streaming histogram + alpha search on ``grid`` (``fixed_alpha`` pins alpha instead)."""

    resizable = _STATS

    def __init__(self, buffers: Buffers | None = None, *, grid: Grid | None = None,
                 bins: int = 2048, sample_size: int | None = DEFAULT_SAMPLE_SIZE, **options: Any) -> None:
        """``options``: ``search`` (golden/grid), ``fixed_alpha``, ``grid_points``, ``exact``, ``name``,
        ``device``/``dtype`` of ``min_val``/``max_val`` (buffers are created when missing)."""
        super().__init__(buffers)
        if int(bins) < 16:
            raise ValueError(f"bins must be at least 16, got {bins}")
        if sample_size is not None and int(sample_size) < 1024:
            raise ValueError(f"sample_size must be at least 1024 (or None to bin every value), got {sample_size}")
        self.bins, self.sample_size = int(bins), None if sample_size is None else int(sample_size)
        self.grid = grid if grid is not None else Grid.from_bits(8, symmetric=True, convention="tensorrt")
        self.search = Search.parse(options.get("search", "golden"))
        self.fixed_alpha: float | None = options.get("fixed_alpha")
        self.grid_points = int(options.get("grid_points", 2000))
        self.exact = bool(options.get("exact", False))
        self.name = str(options.get("name", type(self).__name__))
        self.force_torch_binning = False  # the torch binning path on the CPU too (tests)
        self.counter = [0]  # batches seen (moves the subsample's start); a list: no Module.__setattr__ per batch
        self.cache: tuple[tuple[float, ...], float] | None = None  # (histogram key, searched alpha)
        if "hist_meta" not in self.buffers:
            fk = {"device": options.get("device"), "dtype": options.get("dtype", torch.float64)}
            dev = fk["device"]
            self.buffers["min_val"] = torch.tensor(float("inf"), **fk)
            self.buffers["max_val"] = torch.tensor(float("-inf"), **fk)
            self.buffers["hist_meta"] = torch.tensor([0.0, 0.0, math.inf, -math.inf, float(self.bins)],
                                                     dtype=torch.float64, device=dev)
            for name in _STATS:
                self.buffers[name] = torch.tensor([], dtype=torch.float64, device=dev)
            self.buffers["range_factor"] = torch.tensor(1.0, dtype=torch.float64, device=dev)

    def invalidate(self) -> None:
        self.cache = None

    def histogram(self) -> StreamingHistogram:
        """The statistics so far as a core :class:`StreamingHistogram` (a copy)."""
        return histogram_from_state(self.buffers, self.bins)

    def store(self, hist: StreamingHistogram) -> None:
        """Write ``hist`` into the buffers (``min_val``/``max_val`` included)."""
        state = hist.state()
        for name, key in zip(HIST_KEYS, ("meta", "count", "sum", "sumsq"), strict=True):
            self.set_buffer(name, torch.from_numpy(state[key]))
        self.set_buffer("min_val", torch.tensor(hist.min))
        self.set_buffer("max_val", torch.tensor(hist.max))

    def collect(self, x: Any) -> None:
        """Add a batch (a tensor; with ``exact=True`` anything NumPy reads); NaN/Inf raise ValueError."""
        if self.exact:
            hist = self.histogram()
            hist.update(x)
            self.store(hist)
            self.cache = None
            return
        flat = x.detach().reshape(-1)
        if flat.dtype not in (torch.float32, torch.float64):
            flat = flat.to(torch.float32)
        on_numpy = flat.device.type == "cpu" and not self.force_torch_binning
        meta = self.buffers["hist_meta"].tolist()
        batch = sample_batch(flat, self.sample_size, self.counter[0], on_numpy=on_numpy, signed_hint=meta[2] < 0.0)
        self.counter[0] += 1
        if not (math.isfinite(batch.lo) and math.isfinite(batch.hi)):
            raise ValueError(
                f"{self.name} received NaN/Inf activations: REQuant needs finite values. "
                "In torch.ao FX the weights are observed only at convert_fx, so NaN/Inf weights or biases "
                "of the layer before this observer show up here first: check "
                "[n for n, p in model.named_parameters() if not p.isfinite().all()] and fix those weights; "
                "else fix the calibration inputs or the model's numerics"
            )
        self._accumulate(batch, meta)
        if self.cache is not None:
            self.cache = None

    def _bin(self, batch: BatchSample, width: float, offset: int) -> NDArray[np.float64]:
        """Per-bin count, sum and sum of squares (rows of a ``(3, bins)`` array) of the batch on the
        window ``(width, offset)``, the subsample weighted by ``batch.weight``."""
        values: Any = batch.exact
        n_exact = len(values)
        if batch.bulk is not None and len(batch.bulk):
            values = cat([batch.exact, batch.bulk])
        if isinstance(values, np.ndarray):
            stats = bin_numpy(values, n_exact, batch.weight, width, offset, self.bins)
        else:
            weights = None
            if len(values) > n_exact:
                weights = torch.full((len(values),), batch.weight, dtype=torch.float64, device=values.device)
                weights[:n_exact] = 1.0
            stats = bin_torch(values, weights, width, offset, self.bins)
        if batch.zeros:
            stats[0, min(max(-offset, 0), self.bins - 1)] += batch.zeros * batch.weight
        return stats

    def _accumulate(self, batch: BatchSample, meta: list[float]) -> None:
        """Add the batch to the running histogram (``meta``: the ``hist_meta`` buffer as a list):
        in place while it fits the window, else on the grown window (old bins merged exactly
        ``factor`` to one, or moved by their means)."""
        lo, hi = min(batch.lo, meta[2]), max(batch.hi, meta[3])
        buffers = self.buffers
        bufs = (buffers["hist_count"], buffers["hist_sum"], buffers["hist_sumsq"])
        on_cpu = bufs[0].device.type == "cpu"
        if fits(meta[0], int(meta[1]), meta[2], meta[3], batch.lo, batch.hi, self.bins):
            width, offset = meta[0], int(meta[1])
            stats = self._bin(batch, width, offset)
            for buf, row in zip(bufs, stats, strict=True):
                if on_cpu:
                    view = buf.numpy()
                    view += row
                else:
                    buf.add_(torch.from_numpy(row).to(buf.device))
        else:
            width, offset, factor = grown_window(meta[0], meta[2], meta[3], batch.lo, batch.hi, self.bins)
            stats = self._bin(batch, width, offset)
            if meta[0] != 0.0 and bufs[0].numel():
                old = np.stack([b.numpy() if on_cpu else b.detach().cpu().numpy() for b in bufs])
                stats += moved_bins(old, int(meta[1]), meta[2], meta[3], width, offset, factor)
            if on_cpu and bufs[0].numel() == self.bins:
                for buf, row in zip(bufs, stats, strict=True):
                    buf.numpy()[:] = row
            else:
                for name, row in zip(_STATS, stats, strict=True):
                    self.set_buffer(name, torch.from_numpy(row))
        if (width, offset, lo, hi) != (meta[0], int(meta[1]), meta[2], meta[3]):
            new_meta = (width, float(offset), lo, hi, float(self.bins))
            if on_cpu:  # in place through NumPy views: no tensor construction per batch
                buffers["hist_meta"].numpy()[:] = new_meta
                buffers["min_val"].numpy()[...] = lo
                buffers["max_val"].numpy()[...] = hi
            else:
                self.set_buffer("hist_meta", torch.tensor(new_meta, dtype=torch.float64))
                self.set_buffer("min_val", torch.tensor(lo))
                self.set_buffer("max_val", torch.tensor(hi))

    def compute_range(self) -> ClipRange | None:
        """``f * alpha * [min, max]`` (float64), alpha searched once per histogram; ``None`` before data."""
        hist = self.histogram()
        if hist.empty:
            return None
        key = (hist.total, hist.width, float(hist.offset), hist.min, hist.max)
        if self.cache is None or self.cache[0] != key:  # the search runs once per histogram
            if self.fixed_alpha is not None:
                alpha = self.fixed_alpha
            else:
                alpha = float(hist.estimate(self.grid, search=self.search.value, grid_points=self.grid_points).alpha[0])
            self.cache = (key, alpha)
        scale = float(self.buffers["range_factor"]) * self.cache[1]
        dev = self.buffers["hist_meta"].device
        return ClipRange(torch.tensor(scale * hist.min, dtype=torch.float64, device=dev),
                         torch.tensor(scale * hist.max, dtype=torch.float64, device=dev))

    @property
    def last_alpha(self) -> float | None:
        """The range factor of the last ``compute_range`` (``None`` before it ran)."""
        return None if self.cache is None else self.cache[1]

    def set_range_factor(self, factor: float) -> None:
        """Scale the searched range by ``factor`` in (0, 1] (the ``range_factor`` buffer)."""
        f = float(factor)
        if not (0.0 < f <= 1.0):
            raise ValueError(f"range_factor must be in (0, 1], got {factor!r}")
        with torch.no_grad():
            self.buffers["range_factor"].fill_(f)

    def merge(self, other: Calibrator[Any]) -> None:
        """Add another histogram calibrator's statistics by exact histogram merging."""
        if not isinstance(other, HistogramCalibrator):
            super().merge(other)
            return
        theirs = other.histogram()
        if theirs.empty:
            return
        with torch.no_grad():
            hist = self.histogram()
            hist.merge(theirs)
            self.store(hist)
        self.cache = None

    def reset(self) -> None:
        self.buffers["min_val"].fill_(float("inf"))
        self.buffers["max_val"].fill_(float("-inf"))
        self.buffers["hist_meta"].copy_(torch.tensor([0.0, 0.0, math.inf, -math.inf, float(self.bins)]))
        for name in _STATS:
            self.buffers[name].resize_(0)
        self.cache = None


