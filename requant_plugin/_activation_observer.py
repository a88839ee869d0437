"""REQuant for activations: streamed histogram statistics, the alpha search at the end.

Mixed into torch.ao's and torchao's observer bases by :mod:`requant_plugin.observers` and
:mod:`requant_plugin.pt2e` (see :mod:`requant_plugin._observer_base` for the shared contract).

Per batch the observer makes two passes over the tensor (the maxima of chunks of 128 values and
the minimum, or the chunk minima for signed data) and then works on ``O(sample_size)`` values
(:func:`sample_batch`): the tails -- every value above the ``K``-th largest chunk maximum (and
below the ``K``-th smallest chunk minimum), ``K = sample_size / 128`` -- are binned exactly,
because they decide the clipping error; the rest is represented by a systematic subsample
(runs of 16 consecutive values at a prime stride of runs, coprime with the power-of-two extents
of NCHW activations, starting at a run that moves from batch to batch) whose counts and sums
are scaled so that every batch weighs its true size. Exact zeros of post-ReLU data are counted,
not binned. The range ``[min, max]`` is always exact (``alpha = 1`` equals torch's
``MinMaxObserver``); batches of at most ``sample_size`` values, or ``sample_size=None``, bin
every value.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ._observer_base import _PER_TENSOR, Search, _check_float, _REQuantMixinBase
from .core import StreamingHistogram
from .core.histogram import fits, grown_window, moved_bins

#: Use a float32 index computation while the window's bin indices stay exactly representable.
_F32_INDEX_LIMIT = 1 << 16
#: Values binned per batch by default (larger batches are subsampled, see the module docstring).
DEFAULT_SAMPLE_SIZE = 4096
#: Chunk length of the tail search (``amax`` over chunks, then the ``K`` largest chunk maxima).
_CHUNK = 128
#: Chunk maxima per group in the two-level selection of the ``K`` largest (:func:`_top_chunks`).
_GROUP = 64
#: Values per run of the subsample (64 bytes of float32: one cache line).
_RUN = 16
#: Weyl step that moves the subsample's start from batch to batch.
_START_STEP = 2654435761


def _is_prime(k: int) -> bool:
    if k < 2:
        return False
    return all(k % d for d in range(2, math.isqrt(k) + 1))


@functools.lru_cache(maxsize=256)
def sample_stride(n: int, sample_size: int | None) -> int:
    """Stride of the per-batch subsample: 1 (every value) when ``n <= sample_size`` or
    ``sample_size`` is ``None``, else the smallest prime ``>= ceil(n / sample_size)``."""
    if sample_size is None or n <= sample_size:
        return 1
    k = max(2, -(-n // sample_size))
    while not _is_prime(k):
        k += 1
    return k


def _bin_numpy(v: NDArray[np.floating], n_exact: int, weight: float, width: float, offset: int,
               bins: int) -> NDArray[np.float64]:
    """Per-bin (weighted) count, sum and sum of squares of a flat array, as rows of a ``(3, bins)``
    array (one ``np.bincount`` over the three stacked index ranges): the first ``n_exact``
    values weigh 1, the others ``weight`` each."""
    if v.dtype == np.float32 and abs(offset) + bins < _F32_INDEX_LIMIT:
        t = v * np.float32(1.0 / width)
        t -= np.float32(offset)
    else:
        t = v.astype(np.float64) / width
        t -= float(offset)
    np.maximum(t, 0, out=t)
    np.minimum(t, bins - 1, out=t)
    idx = t.astype(np.intp)
    m = len(idx)
    stacked_idx = np.empty(3 * m, dtype=np.intp)
    stacked_idx[:m] = idx
    np.add(idx, bins, out=stacked_idx[m:2 * m])
    np.add(idx, 2 * bins, out=stacked_idx[2 * m:])
    w = np.empty(3 * m)
    w[:n_exact] = 1.0
    w[n_exact:m] = weight
    np.multiply(w[:m], v, out=w[m:2 * m])
    np.multiply(w[m:2 * m], v, out=w[2 * m:])
    return np.bincount(stacked_idx, w, 3 * bins).astype(np.float64, copy=False).reshape(3, bins)


def _bin_torch(x: Tensor, weights: Tensor | None, width: float, offset: int, bins: int) -> NDArray[np.float64]:
    """The same statistics computed on the tensor's own device (CUDA): only the ``(3, bins)``
    result is copied to the CPU."""
    y = x.reshape(-1).to(torch.float64)
    idx = (y / width - float(offset)).clamp_(0, bins - 1).to(torch.int64)
    w = torch.ones_like(y) if weights is None else weights.to(torch.float64)
    out = torch.zeros(3, bins, dtype=torch.float64, device=x.device)
    out[0].index_add_(0, idx, w)
    wy = w * y
    out[1].index_add_(0, idx, wy)
    out[2].index_add_(0, idx, wy * y)
    return out.cpu().numpy()


class BatchSample(NamedTuple):
    """What one batch contributes: its exact range, the values binned with weight 1 (``exact``)
    and the subsampled rest (``bulk``, each value standing for ``weight`` values)."""

    lo: float
    hi: float
    exact: Any  # 1-D NumPy array (CPU) or tensor (other devices)
    bulk: Any
    weight: float
    zeros: int = 0  # sampled exact zeros left out of ``bulk`` (each also stands for ``weight`` values)


def _to_numpy(t: Tensor) -> Any:
    return t.numpy()


def _identity(t: Tensor) -> Any:
    return t


def _cat(parts: list[Any]) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return torch.cat(parts)


def _top_chunks(cmax: Any, k: int) -> tuple[Any, float, float]:
    """``t``, the ``k``-th largest chunk maximum, the indices of chunks that hold every value
    above it (NumPy: those whose maximum exceeds ``t``, at most ``k - 1``; ``torch.topk``: the
    ``k`` largest) and the largest maximum.

    NumPy (CPU) selects in two levels, exactly: the chunk maxima form strided groups of
    :data:`_GROUP` (a vectorised column maximum); ``k`` groups have a maximum of at least ``T_g``, the
    ``k``-th largest group maximum, so ``t >= T_g`` and every chunk at or above ``t`` lies in a
    group whose maximum is at least ``T_g``. ``t`` is then selected (``np.partition``, no
    sort) among those groups' chunks and the ungrouped remainder only. Other devices use
    ``torch.topk``.
    """
    if not isinstance(cmax, np.ndarray):
        top_v, top_i = torch.topk(cmax, k, sorted=False)
        return top_i, float(top_v.min()), float(top_v.max())
    m = len(cmax)
    per = m // _GROUP  # groups (of _GROUP chunk maxima each)
    if per < 2 * k:  # too few groups to pay: select among all chunk maxima
        t = float(np.partition(cmax, m - k)[m - k])
        return np.flatnonzero(cmax > t), t, float(cmax.max())
    full = per * _GROUP
    gmax = cmax[:full].reshape(_GROUP, per).max(axis=0)  # group j: chunks j, j + per, j + 2 per, ...
    t_g = float(np.partition(gmax, per - k)[per - k])
    groups = np.flatnonzero(gmax >= t_g)
    cand = (np.arange(0, full, per)[:, None] + groups[None, :]).reshape(-1)
    if full < m:
        cand = np.concatenate([cand, np.arange(full, m)])
    values = cmax[cand]
    mc = len(values)
    t = float(np.partition(values, mc - k)[mc - k])
    return cand[values > t], t, float(values.max())


def sample_batch(flat: Tensor, sample_size: int | None, batch_index: int, *, on_numpy: bool,
                 signed_hint: bool = False) -> BatchSample:
    """Split a flat batch into exactly binned tails and a weighted strided subsample.

    With ``n <= sample_size`` (or ``sample_size=None``) every value is exact. Otherwise the
    batch is cut into chunks of :data:`_CHUNK` values; ``t_hi`` is the ``K``-th largest chunk
    maximum (``K * _CHUNK = sample_size``), so every value above ``t_hi`` lies in
    the top-K chunks and is found without a mask pass over the batch (likewise ``t_lo`` below,
    from the chunk minima, when the batch has negative values). Those tail values -- the ones
    that decide the clipping error -- are binned exactly. The values in ``[t_lo, t_hi]`` are
    represented by a systematic subsample: runs of :data:`_RUN` consecutive values (one cache
    line) at a prime stride of runs, starting at a run that moves from batch to batch; each
    sampled value in the interval stands for ``n_bulk / m_bulk`` values, so the total count is
    exact. Costs two passes over the batch (chunk maxima, and the minimum or the chunk minima:
    ``signed_hint`` says which one to expect) plus work on ``O(sample_size)`` values.
    """
    n = flat.numel()
    stride = sample_stride(n // _RUN, None if sample_size is None else sample_size // _RUN)
    if stride == 1 or sample_size is None or n <= sample_size:
        lo_t, hi_t = torch.aminmax(flat)
        return BatchSample(float(lo_t), float(hi_t), flat.numpy() if on_numpy else flat, None, 1.0)
    full = n - n % _CHUNK
    rows_t = (flat if full == n else flat[:full]).view(-1, _CHUNK)
    k = max(1, min(rows_t.shape[0], sample_size // _CHUNK))
    cmax_t = rows_t.amax(dim=1)
    cmin_t = rows_t.amin(dim=1) if signed_hint else None
    lo = float(cmin_t.min()) if cmin_t is not None else float(torch.amin(rows_t))
    # the rest is small-array work: on the CPU in NumPy (views of the same memory, no torch
    # dispatch per step), elsewhere in torch on the tensor's device
    conv = _to_numpy if on_numpy else _identity
    arr = conv(flat)
    rows = arr[:full].reshape(-1, _CHUNK)
    rest = arr[full:]
    top_i, t_hi, hi = _top_chunks(conv(cmax_t), k)
    top = rows[top_i].reshape(-1)
    if len(rest):
        lo = min(lo, float(rest.min()))
        hi = max(hi, float(rest.max()))
        top = _cat([top, rest])
    n_runs = n // _RUN
    sample = arr[:n_runs * _RUN].reshape(-1, _RUN)[(batch_index * _START_STEP) % stride::stride].reshape(-1)
    zeros = 0
    if lo >= 0.0:  # post-ReLU data: the sample's zeros are counted, not binned
        ex = top[top > t_hi]  # every value above t_hi is in the top chunks or the remainder
        pos = sample[sample > 0.0]
        zeros = len(sample) - len(pos)
        bulk = pos[pos <= t_hi]
    else:
        if cmin_t is None:
            cmin_t = rows_t.amin(dim=1)
        bot_i, t_lo, _ = _top_chunks(-conv(cmin_t), k)
        t_lo = -t_lo
        bot = rows[bot_i].reshape(-1)
        if len(rest):
            bot = _cat([bot, rest])
        if not t_lo < t_hi:  # (nearly) constant data: nothing to gain, bin everything
            return BatchSample(lo, hi, arr, None, 1.0)
        ex = _cat([top[top > t_hi], bot[bot < t_lo]])  # disjoint: t_lo < t_hi
        bulk = sample[(sample <= t_hi) & (sample >= t_lo)]
    if len(bulk) + zeros == 0:
        return BatchSample(lo, hi, arr, None, 1.0)
    return BatchSample(lo, hi, ex, bulk, (n - len(ex)) / (len(bulk) + zeros), zeros)


class ActivationObserverMixin(_REQuantMixinBase):
    """REQuant for activations: streamed histogram statistics, alpha search at the end.

    ``forward`` adds each batch to a :class:`~requant_plugin.core.StreamingHistogram` (``bins``
    bins anchored at zero with exact per-bin counts and sums; when a batch falls outside the
    window the width doubles and bins merge exactly). The binning is vectorised: NumPy on the
    CPU (``np.bincount``), torch on other devices. ``calculate_qparams`` runs the alpha search
    on the histogram (``L(alpha)`` with each bin at the code of its mean, bins that straddle a
    rounding threshold split: :class:`~requant_plugin.core.binned.BinnedObjective`) and returns
    ``_calculate_qparams(alpha * min, alpha * max)``.

    Buffers (saved in ``state_dict``): ``min_val``/``max_val`` (running range, ``+-inf`` before
    data), ``hist_meta`` (width, offset, min, max, bins), ``hist_count``, ``hist_sum``,
    ``hist_sumsq`` (empty before data) and ``range_factor`` (1.0; a ``state_dict`` saved before
    it existed loads with 1.0).
    """

    _resizable = ("hist_count", "hist_sum", "hist_sumsq")
    min_val: Tensor
    max_val: Tensor
    hist_meta: Tensor
    hist_count: Tensor
    hist_sum: Tensor
    hist_sumsq: Tensor
    range_factor: Tensor

    def __init__(
        self,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        *args: Any,
        search: Search = "golden",
        alpha: float | None = None,
        bins: int = 2048,
        grid_points: int = 2000,
        sample_size: int | None = DEFAULT_SAMPLE_SIZE,
        **kwargs: Any,
    ) -> None:
        """The arguments after ``qscheme`` (``reduce_range``, ``quant_min``, ``quant_max``,
        ``factory_kwargs``, ``eps``, ``is_dynamic``) are torch's, passed on unchanged. Beyond them:

        search: ``"golden"`` (default), ``"grid"`` (dense reference over ``grid_points``
            alphas) or ``"minmax"`` (``alpha = 1``: exactly torch's ``MinMaxObserver``).
        alpha: pin the range factor instead of searching.
        bins: histogram resolution (the range itself grows without limit).
        sample_size: values binned per batch; a larger batch is binned from an evenly strided
            subsample with counts and sums scaled to the batch size (the range stays exact);
            ``None`` bins every value.
        """
        super().__init__(dtype, qscheme, *args, **kwargs)  # type: ignore[call-arg]
        if self.qscheme not in _PER_TENSOR:
            raise ValueError(
                f"{type(self).__name__} is a per-tensor activation observer: qscheme must be "
                f"per_tensor_affine or per_tensor_symmetric, got {self.qscheme}"
            )
        self._setup_requant(search, alpha, grid_points)
        if int(bins) < 16:
            raise ValueError(f"bins must be at least 16, got {bins}")
        self.bins = int(bins)
        if sample_size is not None and int(sample_size) < 1024:
            raise ValueError(f"sample_size must be at least 1024 (or None to bin every value), got {sample_size}")
        self.sample_size = None if sample_size is None else int(sample_size)
        self._counter = [0]  # batches seen (moves the subsample's start); a list: no Module.__setattr__ per batch
        fk = self._factory_kwargs()
        self.register_buffer("min_val", torch.tensor(float("inf"), **fk))
        self.register_buffer("max_val", torch.tensor(float("-inf"), **fk))
        dev = fk.get("device")
        meta = torch.tensor([0.0, 0.0, math.inf, -math.inf, float(self.bins)], dtype=torch.float64,
                            device=dev)
        self.register_buffer("hist_meta", meta)
        for name in self._resizable:
            self.register_buffer(name, torch.tensor([], dtype=torch.float64, device=dev))
        self.register_buffer("range_factor", torch.tensor(1.0, dtype=torch.float64, device=dev))
        self._cache: tuple[tuple[float, ...], float] | None = None  # (histogram key, searched alpha)
        self.force_torch_binning = False  # use the torch binning path on the CPU too (tests)

    def _invalidate(self) -> None:
        self._cache = None

    def histogram(self) -> StreamingHistogram:
        """The statistics so far as a core :class:`StreamingHistogram` (a copy)."""
        meta = self.hist_meta.detach().cpu().double().numpy()
        if meta[0] == 0.0 or self.hist_count.numel() == 0:
            return StreamingHistogram(self.bins)
        return StreamingHistogram.from_state({
            "meta": meta.copy(), "count": self.hist_count.detach().cpu().numpy(),
            "sum": self.hist_sum.detach().cpu().numpy(), "sumsq": self.hist_sumsq.detach().cpu().numpy(),
        })

    def _store(self, hist: StreamingHistogram) -> None:
        state = hist.state()
        self._set_buffer("hist_meta", torch.from_numpy(state["meta"]))
        for name, key in (("hist_count", "count"), ("hist_sum", "sum"), ("hist_sumsq", "sumsq")):
            self._set_buffer(name, torch.from_numpy(state[key]))
        self._set_buffer("min_val", torch.tensor(hist.min))
        self._set_buffer("max_val", torch.tensor(hist.max))

    def forward(self, x_orig: Tensor) -> Tensor:
        """Add the batch to the histogram; returns ``x_orig`` unchanged."""
        if x_orig.numel() == 0:
            return x_orig
        _check_float(x_orig, type(self).__name__)
        # no autograd context needed: the input is detached and the buffers never require grad
        flat = x_orig.detach().reshape(-1)
        if flat.dtype not in (torch.float32, torch.float64):
            flat = flat.to(torch.float32)
        on_numpy = flat.device.type == "cpu" and not self.force_torch_binning
        meta = self.hist_meta.tolist()
        batch = sample_batch(flat, self.sample_size, self._counter[0], on_numpy=on_numpy,
                             signed_hint=meta[2] < 0.0)
        self._counter[0] += 1
        if not (math.isfinite(batch.lo) and math.isfinite(batch.hi)):
            raise ValueError(
                f"{type(self).__name__} received NaN/Inf activations: REQuant needs finite values. "
                "In torch.ao FX the weights are observed only at convert_fx, so NaN/Inf weights or biases "
                "of the layer before this observer show up here first: check "
                "[n for n, p in model.named_parameters() if not p.isfinite().all()] and fix those weights; "
                "else fix the calibration inputs or the model's numerics"
            )
        self._accumulate(batch, meta)
        if self._cache is not None:
            self._cache = None
        return x_orig

    def _bin(self, batch: BatchSample, width: float, offset: int) -> NDArray[np.float64]:
        """Per-bin count, sum and sum of squares (rows of a ``(3, bins)`` array) of the batch on the
        window ``(width, offset)``, the subsample weighted by ``batch.weight``."""
        values: Any = batch.exact
        n_exact = len(values)
        if batch.bulk is not None and len(batch.bulk):
            values = _cat([batch.exact, batch.bulk])
        if isinstance(values, np.ndarray):
            stats = _bin_numpy(values, n_exact, batch.weight, width, offset, self.bins)
        else:
            weights = None
            if len(values) > n_exact:
                weights = torch.full((len(values),), batch.weight, dtype=torch.float64, device=values.device)
                weights[:n_exact] = 1.0
            stats = _bin_torch(values, weights, width, offset, self.bins)
        if batch.zeros:
            stats[0, min(max(-offset, 0), self.bins - 1)] += batch.zeros * batch.weight
        return stats

    def _accumulate(self, batch: BatchSample, meta: list[float]) -> None:
        """Add the batch to the running histogram (``meta``: the ``hist_meta`` buffer as a list):
        in place while it fits the window, else on the grown window (old bins merged exactly
        ``factor`` to one, or moved by their means)."""
        lo, hi = min(batch.lo, meta[2]), max(batch.hi, meta[3])
        buffers = self._buffers
        bufs: tuple[Tensor, Tensor, Tensor] = (buffers["hist_count"], buffers["hist_sum"],  # type: ignore[assignment]
                                               buffers["hist_sumsq"])
        on_cpu = bufs[0].device.type == "cpu"
        if fits(meta[0], int(meta[1]), meta[2], meta[3], batch.lo, batch.hi, self.bins):
            width, offset = meta[0], int(meta[1])
            stats = self._bin(batch, width, offset)
            if on_cpu:
                for buf, row in zip(bufs, stats, strict=True):
                    view = buf.numpy()
                    view += row
            else:
                for buf, row in zip(bufs, stats, strict=True):
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
                for name, row in zip(self._resizable, stats, strict=True):
                    self._set_buffer(name, torch.from_numpy(row))
        if (width, offset, lo, hi) != (meta[0], int(meta[1]), meta[2], meta[3]):
            new_meta = (width, float(offset), lo, hi, float(self.bins))
            if on_cpu:  # in place through NumPy views: no tensor construction per batch
                buffers["hist_meta"].numpy()[:] = new_meta  # type: ignore[union-attr]
                buffers["min_val"].numpy()[...] = lo  # type: ignore[union-attr]
                buffers["max_val"].numpy()[...] = hi  # type: ignore[union-attr]
            else:
                self._set_buffer("hist_meta", torch.tensor(new_meta, dtype=torch.float64))
                self._set_buffer("min_val", torch.tensor(lo))
                self._set_buffer("max_val", torch.tensor(hi))

    def calculate_qparams(self, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """Search alpha on the histogram; ``_calculate_qparams(f * alpha * min, f * alpha * max)``
        with ``f`` the ``range_factor`` buffer (1 unless :meth:`set_range_factor` changed it)."""
        hist = self.histogram()
        if hist.empty:
            return self._default_qparams()
        key = (hist.total, hist.width, float(hist.offset), hist.min, hist.max)
        if self._cache is None or self._cache[0] != key:  # the search runs once per histogram
            if self.fixed_alpha is not None:
                alpha = self.fixed_alpha
            else:
                alpha = float(hist.estimate(self.grid, search=self._core_search(),
                                            grid_points=self.grid_points).alpha[0])
            self._cache = (key, alpha)
        scale = float(self.range_factor) * self._cache[1]
        dev = self.eps.device
        lo = torch.tensor(scale * hist.min, dtype=torch.float64, device=dev)
        hi = torch.tensor(scale * hist.max, dtype=torch.float64, device=dev)
        return self._qparams_for_range(lo, hi)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any], strict: bool,
        missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str],
    ) -> None:
        """A ``state_dict`` without ``range_factor`` (saved before it existed) loads with 1.0."""
        state_dict.setdefault(prefix + "range_factor", torch.ones((), dtype=torch.float64))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def set_range_factor(self, factor: float) -> None:
        """Scale the searched range by ``factor`` in (0, 1] (stored in the ``range_factor`` buffer).

        For a network-level correction on top of the per-tensor search, see
        :func:`requant_plugin.refine.refine_activation_ranges`.
        """
        f = float(factor)
        if not (0.0 < f <= 1.0):
            raise ValueError(f"range_factor must be in (0, 1], got {factor!r}")
        with torch.no_grad():
            self.range_factor.fill_(f)

    def merge(self, other: ActivationObserverMixin) -> None:
        """Add another observer's statistics (e.g. another process's) by exact histogram merging."""
        if not isinstance(other, ActivationObserverMixin):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        theirs = other.histogram()
        if theirs.empty:
            return
        with torch.no_grad():
            hist = self.histogram()
            hist.merge(theirs)
            self._store(hist)
        self._cache = None

    @property
    def last_alpha(self) -> float | None:
        """The range factor of the last ``calculate_qparams`` (``None`` before it ran)."""
        return None if self._cache is None else self._cache[1]

    def reset_min_max_vals(self) -> None:
        """Forget every statistic."""
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))
        self.hist_meta.copy_(torch.tensor([0.0, 0.0, math.inf, -math.inf, float(self.bins)]))
        for name in self._resizable:
            getattr(self, name).resize_(0)
        self._cache = None

    def extra_repr(self) -> str:
        return (f"search={self.search}, bins={self.bins}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, qscheme={self.qscheme}, min_val={float(self.min_val)}, "
                f"max_val={float(self.max_val)}")


__all__ = ["DEFAULT_SAMPLE_SIZE", "ActivationObserverMixin", "BatchSample", "sample_batch", "sample_stride"]
