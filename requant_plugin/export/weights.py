"""REQuant weight ranges written on the INT8 grid TensorRT runs.

TensorRT has no sub-8-bit convolutions, so every weight becomes an int8 tensor ``q`` plus a
per-channel (or per-tensor) scale ``s`` with ``w_hat = s * q`` (DequantizeLinear, zero point 0):

* ``space="uniform"``, ``bits=b``: REQuant's symmetric TensorRT-convention grid
  ``s = alpha * amax / (2**(b-1) - 1)``, ``q = clamp(round_half_even(w / s), -2**(b-1), 2**(b-1) - 1)``.
  For ``b < 8`` the codes simply use a sub-range of int8 (b-bit accuracy, int8 speed).
* ``space="sqrt"``: REQuant's transform-space grid has ``2**b`` levels ``l_k`` that are not
  evenly spaced in ``w``: for a symmetric grid ``l_k = A_c * g(k)`` with the same shape
  ``g(k) = sign(k)|k|**(1/p)`` in every channel ``c``. ``g`` is snapped once to int8 codes
  ``c_k`` (:func:`sqrt_codebook`), each channel gets the tightest scale that holds its levels,
  ``s = max(max_k l_k / 127, max_k -l_k / 128)``, and each weight keeps the level REQuant
  assigned it (``q = c_k``). A layer therefore holds at most ``2**b`` distinct int8 values.
  For ``p = 1/2`` and ``b <= 4`` the snap is exact (``c_k = 2 sign(k) k**2`` at 4 bits:
  -128..98); from 5 bits on the small levels move (and the smallest collapse to 0), reported
  as ``snap_extra_mse``.

Codes are computed against the scale exactly as stored in the ONNX file (float32, or float16
for ``fp16=True``), so ``DequantizeLinear(q)`` is the weight the simulator uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..range import estimate_range

FP16_MIN_NORMAL = float(np.finfo(np.float16).tiny)


@dataclass(frozen=True)
class WeightTarget:
    """Which weight is written: its layer name, ONNX initializer and per-channel axis (None: per tensor)."""

    layer: str
    tensor: str
    axis: int | None


@dataclass(frozen=True)
class QuantizedWeight:
    """One weight tensor on the int8 grid.

    Attributes:
        layer: layer name; tensor: ONNX initializer name; axis: per-channel axis (None: per tensor).
        bits, space: REQuant settings; alpha: mean range factor over channels.
        q: int8 codes (same shape as the weight); scale: stored scales, ``(C,)`` or ``()``.
        fq_mse: MSE of REQuant's own fake quantization (its grid, float64 scale).
        mse: MSE of the int8 representation ``scale * q`` actually written.
        snap_extra_mse: ``mse - fq_mse`` (the cost of the int8 snapping; ~0 for uniform and for
            sqrt at <= 4 bits, where only the float32 rounding of the scale remains).
        rel_mse: ``mse / mean(w**2)``; distinct: distinct int8 values in the layer.
    """

    layer: str
    tensor: str
    axis: int | None
    bits: int
    space: str
    alpha: float
    q: np.ndarray
    scale: np.ndarray
    fq_mse: float
    mse: float
    snap_extra_mse: float
    rel_mse: float
    distinct: int

    def dequantize(self) -> np.ndarray:
        """``scale * q`` in the scale's dtype broadcast on ``axis`` (what DequantizeLinear gives)."""
        return self.q.astype(self.scale.dtype) * _bcast(self.scale, self.q.ndim, self.axis)


def _bcast(scale: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    if axis is None or scale.ndim == 0:
        return scale.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return scale.reshape(shape)


def _store_scale(scale: np.ndarray, dtype: type) -> np.ndarray:
    """Scale as stored: float32/float16, strictly positive and finite (fp16 kept normal)."""
    s = np.asarray(scale, dtype=np.float64)
    s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
    if dtype is np.float16:
        s = np.clip(s, FP16_MIN_NORMAL, float(np.finfo(np.float16).max))
    out: np.ndarray = s.astype(dtype)
    tiny = np.finfo(dtype).tiny
    return np.where(out >= tiny, out, np.asarray(tiny, dtype=dtype)).astype(dtype)


def _rows(w: np.ndarray, axis: int | None) -> np.ndarray:
    return w.reshape(1, -1) if axis is None else np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def _unrows(rows: np.ndarray, shape: tuple[int, ...], axis: int | None) -> np.ndarray:
    if axis is None:
        return rows.reshape(shape)
    moved = (shape[axis], *shape[:axis], *shape[axis + 1 :])
    return np.moveaxis(rows.reshape(moved), 0, axis)


def sqrt_codebook(quant_min: int, quant_max: int, p: float) -> np.ndarray:
    """int8 codes of the symmetric transform-space levels, shared by every channel.

    The level of code ``k`` is ``A * g(k)`` with ``g(k) = sign(k) |k|**(1/p)`` and a per-channel
    amplitude ``A``; snapping ``g`` with the unit ``max(max g / 127, max -g / 128)`` gives one
    codebook for all channels (so rounding ties cannot make channels differ).
    """
    k = np.arange(quant_min, quant_max + 1, dtype=np.float64)
    g = np.sign(k) * np.abs(k) ** (1.0 / p)
    unit = max(max(g.max(), 0.0) / 127.0, max(-g.min(), 0.0) / 128.0)
    return np.clip(np.rint(g / unit), -128, 127)


def snap_scale(levels: np.ndarray) -> np.ndarray:
    """Per row of ``(R, L)`` levels the int8 scale ``max(max(l) / 127, max(-l) / 128)`` (1 if all 0)."""
    pos = np.maximum(levels.max(axis=1), 0.0) / 127.0
    neg = np.maximum(-levels.min(axis=1), 0.0) / 128.0
    scale = np.maximum(pos, neg)
    return np.where(scale > 0, scale, 1.0)


def quantize_weight(
    w: np.ndarray,
    target: WeightTarget,
    *,
    bits: int = 8,
    space: str = "uniform",
    p: float = 0.5,
    search: str = "golden",
    scale_dtype: type = np.float32,
) -> QuantizedWeight:
    """REQuant ``w`` (symmetric, TensorRT convention) and write it as int8 codes + scales.

    Args:
        w: float weight in ONNX layout; target: its layer, initializer and output-channel axis
            (None for per-tensor).
        bits: 2..8; space: ``"uniform"`` or ``"sqrt"`` (snapped to int8, see module doc).
        scale_dtype: ``np.float32`` or ``np.float16`` (the DequantizeLinear scale type).
    """
    layer, tensor, axis = target.layer, target.tensor, target.axis
    w64 = np.asarray(w, dtype=np.float64)
    per_channel = axis is not None
    est = estimate_range(
        torch.from_numpy(np.array(w, dtype=np.float32)),
        bits,
        symmetric=True,
        per_channel=per_channel,
        ch_axis=axis or 0,
        space=space,  # type: ignore[arg-type]
        p=p,
        search=search,  # type: ignore[arg-type]
        convention="tensorrt",
        name=layer,  # type: ignore[arg-type]
    )
    fq = est.fake_quantize(torch.from_numpy(w64)).numpy()
    rows = _rows(w64, axis)
    if space == "uniform":
        scale = _store_scale(est.scale.cpu().numpy().reshape(-1), scale_dtype)
        codes = np.clip(np.rint(rows / scale.astype(np.float64)[:, None]), est.quant_min, est.quant_max)
    else:
        levels = est.levels().cpu().numpy().reshape(rows.shape[0], -1)
        scale = _store_scale(snap_scale(levels), scale_dtype)
        book = sqrt_codebook(est.quant_min, est.quant_max, est.p)
        k = _rows(est.quantize(torch.from_numpy(w64)).cpu().numpy(), axis) - est.quant_min
        codes = book[k.astype(np.int64)]
    q = _unrows(codes, w64.shape, axis).astype(np.int8)
    stored = scale if per_channel else scale.reshape(())
    deq = q.astype(np.float64) * _bcast(stored.astype(np.float64), q.ndim, axis)
    mse = float(np.mean((w64 - deq) ** 2)) if w64.size else 0.0
    fq_mse = float(np.mean((w64 - fq) ** 2)) if w64.size else 0.0
    mean_sq = float(np.mean(w64**2)) if w64.size else 0.0
    return QuantizedWeight(
        layer=layer,
        tensor=tensor,
        axis=axis,
        bits=bits,
        space=space,
        alpha=float(est.alpha.double().mean()),
        q=q,
        scale=stored,
        fq_mse=fq_mse,
        mse=mse,
        snap_extra_mse=mse - fq_mse,
        rel_mse=mse / mean_sq if mean_sq > 0 else 0.0,
        distinct=int(np.unique(q).size),
    )


def pinned_weight(
    w: np.ndarray, est: Any, target: WeightTarget, *, scale_dtype: type = np.float32
) -> QuantizedWeight:
    """Write a weight that is already on a given symmetric grid as int8 codes + its scales.

    ``est`` is the layer's :class:`~requant_plugin.RangeEstimate` (``report[name].estimate``
    of :func:`requant_plugin.quantize_weights`, e.g. ``recipe="beyond-tensorrt"``), and ``w``
    the quantized weight in ONNX layout, so ``w = scale * q`` holds exactly: the codes are
    ``q = rint(w / scale)`` and nothing is searched again. Raises ``ValueError`` (naming the
    layer) when the grid is not TensorRT's (uniform, symmetric, zero point 0, at most 8 bits)
    or when ``w`` is not on it (for example BatchNorm folded after quantization).
    """
    layer, tensor, axis = target.layer, target.tensor, target.axis
    where = f"layer {layer!r}"
    if est.space != "uniform" or not est.symmetric or bool((est.zero_point != 0).any()):
        raise ValueError(
            f"{where}: TensorRT needs a uniform symmetric weight grid with zero point 0, the given range is "
            f"space={est.space!r}, symmetric={est.symmetric}; quantize with recipe='beyond-tensorrt' "
            "(or space='uniform', symmetric=True, convention='tensorrt')"
        )
    if est.quant_min < -128 or est.quant_max > 127:
        raise ValueError(f"{where}: codes [{est.quant_min}, {est.quant_max}] do not fit int8")
    per_channel = bool(est.per_channel)
    if per_channel != (axis is not None):
        raise ValueError(
            f"{where}: the given range is {'per-channel' if per_channel else 'per-tensor'} but the export "
            f"is {'per-channel' if axis is not None else 'per-tensor'}; pass per_channel={per_channel}"
        )
    w64 = np.asarray(w, dtype=np.float64)
    rows = _rows(w64, axis)
    scale64 = est.scale.detach().double().cpu().numpy().reshape(-1)
    if scale64.size != rows.shape[0]:
        raise ValueError(f"{where}: {scale64.size} scales for {rows.shape[0]} output channels")
    stored = _store_scale(scale64, scale_dtype)
    ratio = rows / stored.astype(np.float64)[:, None]
    codes = np.rint(ratio)
    off = float(np.max(np.abs(ratio - codes))) if ratio.size else 0.0
    if off > 1e-3 or (ratio.size and (codes.min() < est.quant_min or codes.max() > est.quant_max)):
        raise ValueError(
            f"{where}: the weight is not on the given grid (largest distance {off:.3g} codes): pass the "
            "model returned by quantize_weights together with its report, quantized with fold_bn=True "
            "(the export folds BatchNorm, which moves weights off the grid)"
        )
    q = _unrows(codes, w64.shape, axis).astype(np.int8)
    out_scale = stored if per_channel else stored.reshape(())
    deq = q.astype(np.float64) * _bcast(out_scale.astype(np.float64), q.ndim, axis)
    mse = float(np.mean((w64 - deq) ** 2)) if w64.size else 0.0
    return QuantizedWeight(
        layer=layer, tensor=tensor, axis=axis, bits=(est.quant_max - est.quant_min + 1).bit_length() - 1,
        space="uniform", alpha=float(est.alpha.double().mean()), q=q, scale=out_scale,
        fq_mse=mse, mse=mse, snap_extra_mse=0.0,
        rel_mse=mse / float(np.mean(w64**2)) if w64.size and float(np.mean(w64**2)) > 0 else 0.0,
        distinct=int(np.unique(q).size),
    )
