"""Per-batch sampling and binning of the streaming-histogram activation calibrator.

Per batch two passes over the tensor (the maxima of chunks of 128 values and the minimum, or
the chunk minima for signed data), then work on ``O(sample_size)`` values
(:func:`sample_batch`): the tails -- every value above the ``K``-th largest chunk maximum (and
below the ``K``-th smallest chunk minimum), ``K = sample_size / 128`` -- are binned exactly,
because they decide the clipping error; the rest is represented by a systematic subsample
(runs of 16 consecutive values at a prime stride of runs, coprime with the power-of-two extents
of NCHW activations, starting at a run that moves from batch to batch) whose counts and sums
are scaled so that every batch weighs its true size. Exact zeros of post-ReLU data are counted,
not binned. The range ``[min, max]`` is always exact; batches of at most ``sample_size``
values, or ``sample_size=None``, bin every value.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

__all__ = ["CHUNK", "DEFAULT_SAMPLE_SIZE", "BatchSample", "bin_numpy", "bin_torch", "cat", "sample_batch",
           "sample_stride", "top_chunks"]

#: Use a float32 index computation while the window's bin indices stay exactly representable.
_F32_INDEX_LIMIT = 1 << 16
#: Values binned per batch by default (larger batches are subsampled, see the module docstring).
DEFAULT_SAMPLE_SIZE = 4096
#: Chunk length of the tail search (``amax`` over chunks, then the ``K`` largest chunk maxima).
CHUNK = 128
#: Chunk maxima per group in the two-level selection of the ``K`` largest (:func:`top_chunks`).
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


def bin_numpy(v: NDArray[np.floating], n_exact: int, weight: float, width: float, offset: int,
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


def bin_torch(x: Tensor, weights: Tensor | None, width: float, offset: int, bins: int) -> NDArray[np.float64]:
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


def cat(parts: list[Any]) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return torch.cat(parts)


def top_chunks(cmax: Any, k: int) -> tuple[Any, float, float]:
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
    batch is cut into chunks of :data:`CHUNK` values; ``t_hi`` is the ``K``-th largest chunk
    maximum (``K * CHUNK = sample_size``), so every value above ``t_hi`` lies in
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
    full = n - n % CHUNK
    rows_t = (flat if full == n else flat[:full]).view(-1, CHUNK)
    k = max(1, min(rows_t.shape[0], sample_size // CHUNK))
    cmax_t = rows_t.amax(dim=1)
    cmin_t = rows_t.amin(dim=1) if signed_hint else None
    lo = float(cmin_t.min()) if cmin_t is not None else float(torch.amin(rows_t))
    # the rest is small-array work: on the CPU in NumPy (views of the same memory, no torch
    # dispatch per step), elsewhere in torch on the tensor's device
    conv = _to_numpy if on_numpy else _identity
    arr = conv(flat)
    rows = arr[:full].reshape(-1, CHUNK)
    rest = arr[full:]
    top_i, t_hi, hi = top_chunks(conv(cmax_t), k)
    top = rows[top_i].reshape(-1)
    if len(rest):
        lo = min(lo, float(rest.min()))
        hi = max(hi, float(rest.max()))
        top = cat([top, rest])
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
        bot_i, t_lo, _ = top_chunks(-conv(cmin_t), k)
        t_lo = -t_lo
        bot = rows[bot_i].reshape(-1)
        if len(rest):
            bot = cat([bot, rest])
        if not t_lo < t_hi:  # (nearly) constant data: nothing to gain, bin everything
            return BatchSample(lo, hi, arr, None, 1.0)
        ex = cat([top[top > t_hi], bot[bot < t_lo]])  # disjoint: t_lo < t_hi
        bulk = sample[(sample <= t_hi) & (sample >= t_lo)]
    if len(bulk) + zeros == 0:
        return BatchSample(lo, hi, arr, None, 1.0)
    return BatchSample(lo, hi, ex, bulk, (n - len(ex)) / (len(bulk) + zeros), zeros)
