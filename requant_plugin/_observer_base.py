"""REQuant observer logic shared by the torch.ao (FX) and torchao (pt2e) observer classes.

torch.ao and torchao ship two *distinct* copies of ``UniformQuantizationObserverBase`` and each
flow only recognises observers derived from its own copy, so the algorithm lives in the
mixins below and :mod:`requant_plugin.observers` / :mod:`requant_plugin.pt2e` combine them with
the right base in two-line classes. The mixins only use what both bases provide:
``dtype``, ``qscheme``, ``quant_min``, ``quant_max``, ``has_customized_qrange``, the ``eps``
buffer and ``_calculate_qparams(min_val, max_val)``.

REQuant only chooses the clipping range. For a data range ``[lo, hi]`` and range factor
``alpha`` in (0, 1] the observer hands ``_calculate_qparams(alpha * lo, alpha * hi)`` to the
base class, so torch's conventions (``eps``, zero-point rounding and clamping, the symmetric
zero point of unsigned dtypes, 1-element tensors per tensor) apply unchanged; ``alpha = 1``
(``search="minmax"``) therefore reproduces ``MinMaxObserver`` / ``PerChannelMinMaxObserver``
exactly. ``alpha`` minimises the quantization MSE on the grid that torch will use:

* **weights** (:class:`WeightObserverMixin`, :class:`PerChannelWeightObserverMixin`): the exact
  search of :func:`requant_plugin.estimate_range` on the observed (BN-folded) weight, run once
  per distinct weight and cached (pt2e calls weight observers on every calibration batch).
  ``space="sqrt"`` searches the grid of ``T(w) = sign(w) * (|w| / m) ** p`` and hands the
  uniform backend its clipping range mapped back to ``w``:
  ``T^-1(alpha * T([lo, hi])) = alpha ** (1 / p) * [lo, hi]``.
* **activations** (:class:`ActivationObserverMixin`): per-bin counts and sums streamed over the
  calibration batches into a :class:`~requant_plugin.core.StreamingHistogram` (whose range grows
  by exact bin merging), then the same alpha search on the histogram at ``calculate_qparams``.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from .core import Grid, RangeObjective, StreamingHistogram, golden_search, grid_search, objective_for_rows
from .range import estimate_range, rows_of

Search = Literal["golden", "grid", "minmax"]
SEARCH_CHOICES: tuple[str, ...] = ("golden", "grid", "minmax")
WeightSpace = Literal["uniform", "sqrt"]
_SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric)
_UNSIGNED = (torch.quint8, torch.uint8)
#: Use a float32 index computation while the window's bin indices stay exactly representable.
_F32_INDEX_LIMIT = 1 << 16
#: Drop exact zeros before binning (and count them separately) above this fraction of zeros.
_ZERO_SKIP_FRACTION = 0.25
#: ``E[x]**2 / Var[x]`` of a ReLU of a standard normal: ``(1 / 2pi) / (1/2 - 1/2pi)``.
RELU_MEAN_RATIO = (1.0 / (2.0 * math.pi)) / (0.5 - 1.0 / (2.0 * math.pi))
_NO_DATA = (
    "must run observer before calling calculate_qparams: returning the default scale 1.0 and "
    "zero point 0"
)


def symmetric_zero_point(dtype: torch.dtype, quant_min: int, quant_max: int, customized: bool) -> int:
    """The zero point torch's ``_calculate_qparams`` uses for a symmetric qscheme.

    0 for signed dtypes; for ``quint8``/``uint8`` the rounded-down midpoint
    ``(quant_min + quant_max) // 2`` of a customised range, else 128.
    """
    if dtype in _UNSIGNED:
        return (quant_min + quant_max) // 2 if customized else 128
    if dtype == torch.uint16:
        return 2**15
    return 0


def observer_grid(
    dtype: torch.dtype, qscheme: torch.qscheme, quant_min: int, quant_max: int, customized: bool
) -> Grid:
    """The core :class:`~requant_plugin.core.Grid` equal to torch's quantizer for these settings.

    Affine: ``Grid(quant_min, quant_max)``, whose data-dependent zero point follows torch's
    ``quant_min - round(lo / scale)``. Symmetric: the codes shifted by torch's fixed zero point
    ``z0`` (``Grid(quant_min - z0, quant_max - z0, symmetric=True)``) with the scale
    ``max|x| / ((quant_max - quant_min) / 2)`` of torch's ``MinMaxObserver``.
    """
    levels = quant_max - quant_min + 1
    if levels > 256:
        raise ValueError(
            f"REQuant observers support at most 256 levels (8 bits); [{quant_min}, {quant_max}] has "
            f"{levels}: pass quant_min/quant_max of an 8-bit or smaller range"
        )
    if qscheme in _SYMMETRIC:
        z0 = symmetric_zero_point(dtype, quant_min, quant_max, customized)
        if not quant_min <= z0 <= quant_max:
            raise ValueError(
                f"symmetric range [{quant_min}, {quant_max}] does not contain torch's zero point {z0} "
                f"for {dtype}"
            )
        return Grid(quant_min - z0, quant_max - z0, True, "torch")
    return Grid(quant_min, quant_max, False, "torch")


def _check_search(search: str, alpha: float | None) -> float | None:
    """Validate ``search``/``alpha``; returns the pinned alpha (``None`` when searching)."""
    if search not in SEARCH_CHOICES:
        raise ValueError(f"unknown search {search!r}: valid values are {list(SEARCH_CHOICES)}")
    if alpha is not None:
        alpha = float(alpha)
        if not 0.0 < alpha <= 1.0 or not math.isfinite(alpha):
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if search == "minmax" and alpha != 1.0:
            raise ValueError("search='minmax' pins alpha to 1; do not also pass alpha")
        return alpha
    return 1.0 if search == "minmax" else None


def _check_float(x: Tensor, who: str) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{who} observes floating-point tensors, got dtype {x.dtype}")


class _REQuantMixinBase(torch.nn.Module):
    """State handling shared by every REQuant observer (mixed into torch's observer bases)."""

    if TYPE_CHECKING:  # provided by (torch.ao | torchao).UniformQuantizationObserverBase
        dtype: torch.dtype
        qscheme: torch.qscheme
        quant_min: int
        quant_max: int
        has_customized_qrange: bool
        eps: Tensor
        is_dynamic: bool

        def _calculate_qparams(self, min_val: Tensor, max_val: Tensor) -> tuple[Tensor, Tensor]: ...

    #: buffers that start empty and take their size from the data (resized on load)
    _resizable: tuple[str, ...] = ()

    def _setup_requant(self, search: str, alpha: float | None, grid_points: int) -> None:
        if self.is_dynamic:
            raise ValueError(f"{type(self).__name__} is a static (calibration) observer: is_dynamic=True "
                             "is not supported")
        if self.qscheme == torch.per_channel_affine_float_qparams:
            raise ValueError(f"{type(self).__name__} does not support per_channel_affine_float_qparams")
        self.search = search
        self.fixed_alpha = _check_search(search, alpha)
        if int(grid_points) < 2:
            raise ValueError(f"grid_points must be at least 2, got {grid_points}")
        self.grid_points = int(grid_points)
        self.grid = observer_grid(self.dtype, self.qscheme, int(self.quant_min), int(self.quant_max),
                                  bool(self.has_customized_qrange))

    @property
    def symmetric(self) -> bool:
        """True for the symmetric qschemes."""
        return self.qscheme in _SYMMETRIC

    def _core_search(self) -> Literal["golden", "grid"]:
        return "grid" if self.search == "grid" else "golden"

    def _default_qparams(self) -> tuple[Tensor, Tensor]:
        warnings.warn(f"{type(self).__name__}: {_NO_DATA}", UserWarning, stacklevel=3)
        dev = self.eps.device
        return torch.tensor([1.0], device=dev), torch.tensor([0], device=dev)

    def _qparams_for_range(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """``(scale, zero_point)`` by the base class's rules for the clipping range ``[lo, hi]``."""
        return self._calculate_qparams(lo.to(torch.float32), hi.to(torch.float32))

    def _set_buffer(self, name: str, value: Tensor) -> None:
        buf = getattr(self, name)
        value = value.to(device=buf.device, dtype=buf.dtype)
        if buf.shape != value.shape:
            buf.resize_(value.shape)
        buf.copy_(value)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any], strict: bool,
        missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str],
    ) -> None:
        """Resize data-sized buffers to the saved shapes before the regular load copies them."""
        for name in self._resizable:
            key = prefix + name
            if key in state_dict and isinstance(state_dict[key], Tensor):
                getattr(self, name).resize_(state_dict[key].shape)
        self._invalidate()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _invalidate(self) -> None:
        """Forget caches derived from the buffers (called when they are replaced)."""


# --------------------------------------------------------------------------- weights


class CoherentErrorObjective:
    """Weight MSE plus the coherent part of the layer's output error, per row (channel).

    For output channel weights ``w_i`` with errors ``d_i = w_hat_i - w_i`` and inputs ``x_i``
    that are independent with mean ``mu`` and variance ``sigma**2``, the output error
    ``e = sum_i d_i x_i`` has ``E[e**2] = sigma**2 * sum_i d_i**2 + mu**2 * (sum_i d_i)**2``.
    Divided by ``sigma**2 * n`` this is ``L(alpha) = (sum_i d_i**2 + rho * (sum_i d_i)**2) / n``
    with ``rho = mu**2 / sigma**2`` (``rho = 0``: REQuant's weight MSE). Rounding errors are
    zero-mean and cancel in ``sum_i d_i``; clipping errors all shrink the large weights and do
    not, which the plain weight MSE does not see. Both sums come exactly from the core
    objective's per-code statistics: ``sum_i d_i = sum_k (v_k n_k - S1_k)``. Implements the
    core search's ``Objective`` protocol (no least-squares polish: ``refit`` returns ``alpha``).
    """

    def __init__(self, base: RangeObjective, rho: float) -> None:
        self.base, self.rho = base, float(rho)
        self.rows, self.n, self.grid = base.rows, base.n, base.grid
        self.evaluations = base.evaluations

    def __call__(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        alpha = np.asarray(alpha, dtype=np.float64)
        if alpha.ndim == 1:
            alpha = np.broadcast_to(alpha[None, :], (self.rows, alpha.shape[0]))
        per = self.rows * self.grid.levels * (64 if getattr(self.base, "_blocked", False) else 1)
        step = max(1, (1 << 22) // max(1, per))
        parts = []
        for i in range(0, alpha.shape[1], step):
            a = alpha[:, i:i + step]
            c = self.base.codes(a)
            v = (a ** self.base.exponent)[:, :, None] * c.level_coef
            sse = np.maximum(np.sum(c.sum2 - 2.0 * v * c.sum1 + v * v * c.count, axis=2), 0.0)
            bias = np.sum(v * c.count - c.sum1, axis=2)
            parts.append((sse + self.rho * bias * bias) / self.base.total_weight[:, None])
        self.evaluations = self.base.evaluations
        return np.concatenate(parts, axis=1)

    def refit(self, alpha: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(alpha, dtype=np.float64)



class WeightObserverMixin(_REQuantMixinBase):
    """REQuant for a weight tensor: the exact search on the tensor itself, cached per weight.

    The observer keeps the most recent *distinct* tensor's result: a call with the same tensor
    (same storage, offset, shape, strides, dtype, device, version counter and checksum) is a
    no-op, so pt2e's per-batch weight observation costs a few cheap checks after the first batch.
    A different tensor replaces the result (weights are not accumulated like activations).
    The checksum (a float64 sum) guards against a new tensor reusing a freed one's memory.

    Buffers (all saved in ``state_dict``; empty until a weight was seen): ``min_val``,
    ``max_val`` (data range), ``alpha`` (range factor chosen in the searched space) and
    ``clip_min``, ``clip_max`` (the clipping range handed to ``_calculate_qparams``).
    """

    _resizable = ("min_val", "max_val", "alpha", "clip_min", "clip_max")
    per_channel = False
    min_val: Tensor
    max_val: Tensor
    alpha: Tensor
    clip_min: Tensor
    clip_max: Tensor

    def __init__(
        self,
        dtype: torch.dtype = torch.qint8,
        qscheme: torch.qscheme = torch.per_tensor_symmetric,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
        *,
        search: Search = "golden",
        alpha: float | None = None,
        space: WeightSpace = "uniform",
        p: float = 0.5,
        grid_points: int = 2000,
        input_mean_ratio: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """Args beyond torch's observer arguments:

        search: ``"golden"`` (default, fast exact search), ``"grid"`` (dense reference over
            ``grid_points`` alphas) or ``"minmax"`` (``alpha = 1``: torch's min-max observer).
        alpha: pin the range factor instead of searching.
        space: ``"uniform"`` or ``"sqrt"`` (search on ``sign(w) * (|w| / m) ** p``; the backend
            still gets a uniform grid, clipped to the chosen range mapped back to ``w``).
        p: exponent of the ``"sqrt"`` transform.
        input_mean_ratio: ``rho = E[x]**2 / Var[x]`` assumed for the layer inputs; ``rho > 0``
            searches :class:`CoherentErrorObjective` (weight MSE plus ``rho * (sum of errors)**2``
            per channel) instead of the plain weight MSE; :data:`RELU_MEAN_RATIO` (0.467) is a
            ReLU of a standard normal.
        """
        super().__init__(  # type: ignore[call-arg]
            dtype=dtype, qscheme=qscheme, reduce_range=reduce_range, quant_min=quant_min,
            quant_max=quant_max, factory_kwargs=factory_kwargs, eps=eps, is_dynamic=is_dynamic, **kwargs,
        )
        self._check_qscheme()
        self._setup_requant(search, alpha, grid_points)
        if space not in ("uniform", "sqrt"):
            raise ValueError(f"unknown space {space!r}: valid values are ['uniform', 'sqrt']")
        if not 0.0 < float(p) <= 1.0:
            raise ValueError(f"the transform exponent p must be in (0, 1], got {p}")
        self.space = space
        self.p = float(p)
        if not (math.isfinite(float(input_mean_ratio)) and float(input_mean_ratio) >= 0.0):
            raise ValueError(f"input_mean_ratio must be a finite number >= 0, got {input_mean_ratio}")
        self.input_mean_ratio = float(input_mean_ratio)
        fk = torch.nn.factory_kwargs(factory_kwargs)
        for name in self._resizable:
            self.register_buffer(name, torch.tensor([], **fk))
        self._weight_key: tuple[Any, ...] | None = None
        self.searches = 0  # number of REQuant searches run (for tests and diagnostics)

    def _check_qscheme(self) -> None:
        if self.qscheme not in _PER_TENSOR:
            raise ValueError(
                f"{type(self).__name__} is per-tensor: qscheme must be per_tensor_affine or "
                f"per_tensor_symmetric, got {self.qscheme}; use the PerChannel class for per-channel"
            )

    def _invalidate(self) -> None:
        self._weight_key = None

    @staticmethod
    def _tensor_key(x: Tensor) -> tuple[Any, ...]:
        try:
            version: int | None = x._version
        except RuntimeError:  # inference tensors carry no version counter
            version = None
        with torch.no_grad():
            checksum = float(x.detach().double().sum()) if x.numel() else 0.0
        return (x.data_ptr(), x.storage_offset(), tuple(x.shape), tuple(x.stride()), x.dtype,
                str(x.device), version, checksum)

    def _same_weight(self, key: tuple[Any, ...]) -> bool:
        return self._weight_key is not None and self.clip_min.numel() > 0 and key == self._weight_key

    def _data_range(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = x.to(torch.float32)
        if not self.per_channel:
            lo, hi = torch.aminmax(y)
            return lo, hi
        ax = self._ch_axis(x)
        y = y.movedim(ax, 0).reshape(x.shape[ax], -1)
        if y.shape[1] == 0:
            z = torch.zeros(x.shape[ax], device=x.device)
            return z, z.clone()
        lo, hi = torch.aminmax(y, dim=1)
        return lo, hi

    def _ch_axis(self, x: Tensor) -> int:
        return 0

    def forward(self, x_orig: Tensor) -> Tensor:
        """Run (or reuse) the REQuant search for this weight; returns ``x_orig`` unchanged."""
        if x_orig.numel() == 0:
            return x_orig
        _check_float(x_orig, type(self).__name__)
        key = self._tensor_key(x_orig)
        if self._same_weight(key):
            return x_orig
        with torch.no_grad():
            self._observe(x_orig.detach())
        self._weight_key = key
        return x_orig

    def _observe(self, x: Tensor) -> None:
        lo, hi = self._data_range(x)
        if not (bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all())):
            raise ValueError(f"{type(self).__name__}: the weight has NaN/Inf values; REQuant needs finite "
                             "weights (fix the layer or exclude it from quantization)")
        if self.fixed_alpha is not None:
            alpha = torch.full(lo.shape, self.fixed_alpha, dtype=torch.float64, device=x.device)
            factor = alpha
        elif self.input_mean_ratio > 0.0:
            alpha = self._coherent_search(x).reshape(lo.shape)
            factor = alpha if self.space == "uniform" else alpha ** (1.0 / self.p)
        else:
            g = self.grid
            est = estimate_range(
                x, quant_min=g.quant_min, quant_max=g.quant_max, symmetric=g.symmetric,
                per_channel=self.per_channel, ch_axis=self._ch_axis(x), space=self.space,
                search=self._core_search(), p=self.p, convention="torch", grid_points=self.grid_points,
                name=type(self).__name__,
            )
            self.searches += 1
            alpha = est.alpha.to(device=x.device, dtype=torch.float64).reshape(lo.shape)
            factor = alpha if self.space == "uniform" else alpha ** (1.0 / self.p)
        # alpha == 1 keeps lo/hi bit-exact (float32 -> float64 -> float32)
        clip_lo = (factor * lo.double()).float()
        clip_hi = (factor * hi.double()).float()
        for name, val in (("min_val", lo), ("max_val", hi), ("alpha", alpha),
                          ("clip_min", clip_lo), ("clip_max", clip_hi)):
            self._set_buffer(name, val)

    def _coherent_search(self, x: Tensor) -> Tensor:
        """The alpha search on :class:`CoherentErrorObjective` (one alpha per row)."""
        rows = rows_of(x, self.per_channel, self._ch_axis(x))
        base = objective_for_rows(rows, self.grid, p=1.0 if self.space == "uniform" else self.p)
        obj = CoherentErrorObjective(base, self.input_mean_ratio)
        res = grid_search(obj, self.grid_points) if self.search == "grid" else golden_search(obj)
        self.searches += 1
        return torch.as_tensor(res.alpha, dtype=torch.float64, device=x.device)

    def calculate_qparams(self, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """``_calculate_qparams(clip_min, clip_max)``: torch's scale/zero point for REQuant's range."""
        if self.clip_min.numel() == 0:
            return self._default_qparams()
        return self._qparams_for_range(self.clip_min, self.clip_max)

    def reset_min_max_vals(self) -> None:
        """Forget the observed weight."""
        for name in self._resizable:
            getattr(self, name).resize_(0)
        self._invalidate()

    def extra_repr(self) -> str:
        a = self.alpha
        shown = "none" if a.numel() == 0 else (f"{float(a):.4f}" if a.numel() == 1 else
                                               f"[{float(a.min()):.4f}, {float(a.max()):.4f}]")
        return (f"search={self.search}, space={self.space}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, qscheme={self.qscheme}, alpha={shown}")


class PerChannelWeightObserverMixin(WeightObserverMixin):
    """Per-channel REQuant weights: one range factor per slice along ``ch_axis``."""

    per_channel = True

    def __init__(
        self,
        ch_axis: int = 0,
        dtype: torch.dtype = torch.qint8,
        qscheme: torch.qscheme = torch.per_channel_symmetric,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        """``ch_axis``: the channel axis (0 = output channels of conv/linear weights)."""
        super().__init__(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range, quant_min=quant_min,
                         quant_max=quant_max, factory_kwargs=factory_kwargs, eps=eps,
                         is_dynamic=is_dynamic, **kwargs)
        self.ch_axis = int(ch_axis) if ch_axis is not None else 0

    def _check_qscheme(self) -> None:
        if self.qscheme not in _PER_CHANNEL:
            raise ValueError(
                f"{type(self).__name__} is per-channel: qscheme must be per_channel_affine or "
                f"per_channel_symmetric, got {self.qscheme}"
            )

    def _ch_axis(self, x: Tensor) -> int:
        if not -x.dim() <= self.ch_axis < x.dim():
            raise ValueError(f"{type(self).__name__}: ch_axis={self.ch_axis} is out of range for a "
                             f"{x.dim()}-D weight of shape {tuple(x.shape)}")
        return self.ch_axis % x.dim()


# --------------------------------------------------------------------------- activations


#: Rebuild the window instead of doubling the bin width more than this many times.
_MAX_DOUBLINGS = 40


def _fresh_width(lo: float, hi: float, bins: int) -> float:
    """The core's initial bin width for data in ``[lo, hi]``."""
    span = hi - lo
    return span / (bins - 2) if span > 0 else max(abs(lo), abs(hi), 1e-30) * 1e-6


def _batch_window(hist: StreamingHistogram, lo: float, hi: float, bins: int) -> tuple[float, int, bool]:
    """Bin width, first bin index and a rebuild flag for a batch with range ``[lo, hi]``.

    An empty histogram gets the core's initial width ``(hi - lo) / (bins - 2)``; otherwise the
    running width doubled until the batch fits, so the batch histogram lies on the running
    histogram's power-of-two ladder and :meth:`StreamingHistogram.merge` combines them by exact
    bin merging. When the running histogram holds a single value (its width is arbitrary) or the
    range grows by more than ``2**40``, the flag asks to rebuild the window from the union range
    (the old bins move by their means: moments stay exact).
    """
    if hist.empty:
        width = _fresh_width(lo, hi, bins)
        return width, math.floor(lo / width), False
    width = hist.width
    for _ in range(_MAX_DOUBLINGS):
        if math.floor(hi / width) - math.floor(lo / width) + 1 <= bins:
            if hist.max > hist.min or (lo == hi == hist.min):
                return width, math.floor(lo / width), False
            break
        width *= 2.0
    u_lo, u_hi = min(lo, hist.min), max(hi, hist.max)
    width = _fresh_width(u_lo, u_hi, bins)
    return width, math.floor(lo / width), True


def _rebase(hist: StreamingHistogram, width: float, bins: int) -> StreamingHistogram:
    """``hist`` re-binned at ``width`` by its bin means (exact counts, sums and sums of squares)."""
    keep = hist.count > 0
    means = np.clip(hist.sum[keep] / hist.count[keep], hist.min, hist.max)
    offset = math.floor(hist.min / width)
    idx = np.clip(np.floor(means / width).astype(np.int64) - offset, 0, bins - 1)
    return StreamingHistogram.from_state({
        "meta": np.array([width, float(offset), hist.min, hist.max, float(bins)]),
        "count": np.bincount(idx, hist.count[keep], bins).astype(np.float64),
        "sum": np.bincount(idx, hist.sum[keep], bins).astype(np.float64),
        "sumsq": np.bincount(idx, hist.sumsq[keep], bins).astype(np.float64),
    })


def _bin_numpy(v: NDArray[np.floating], width: float, offset: int, bins: int
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """Per-bin count and sum and the total sum of squares of a flat CPU array (vectorised)."""
    zeros = 0
    if v.size > 4096:
        nonzero = int(np.count_nonzero(v))
        if nonzero < (1.0 - _ZERO_SKIP_FRACTION) * v.size:  # post-ReLU data: bin zeros in O(1)
            zeros = v.size - nonzero
            v = v[v != 0]
    if v.dtype == np.float32 and abs(offset) + bins < _F32_INDEX_LIMIT:
        t = v * np.float32(1.0 / width)
        t -= np.float32(offset)
    else:
        t = v.astype(np.float64) / width
        t -= float(offset)
    np.clip(t, 0, bins - 1, out=t)
    idx = t.astype(np.intp)
    v64 = v.astype(np.float64)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    total = np.bincount(idx, v64, bins).astype(np.float64, copy=False)
    sumsq = float(np.einsum("i,i->", v64, v64))
    if zeros:
        count[min(max(-offset, 0), bins - 1)] += zeros
    return count, total, sumsq


def _bin_torch(x: Tensor, width: float, offset: int, bins: int
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """The same statistics computed on the tensor's own device (CUDA): only ``bins``-sized
    arrays and one scalar are copied to the CPU."""
    y = x.reshape(-1).to(torch.float64)
    idx = (y / width - float(offset)).clamp_(0, bins - 1).to(torch.int64)
    count = torch.bincount(idx, minlength=bins).to(torch.float64)
    total = torch.zeros(bins, dtype=torch.float64, device=x.device).index_add_(0, idx, y)
    sumsq = float(torch.dot(y, y))
    return count.cpu().numpy().astype(np.float64), total.cpu().numpy(), sumsq


def _spread_sumsq(count: NDArray[np.float64], total: NDArray[np.float64], sumsq: float
                  ) -> NDArray[np.float64]:
    """Per-bin sums of squares with the exact total: ``S1_b**2 / n_b`` plus the batch's
    within-bin scatter spread evenly over its values.

    ``L(alpha)`` only depends on the total sum of squares (the per-code ``S2_k`` telescope to
    it), so the search result and the reported MSE are the same as with exact per-bin sums of
    squares, while the update avoids a third scatter pass over the data.
    """
    keep = count > 0
    base = np.zeros_like(total)
    base[keep] = total[keep] ** 2 / count[keep]
    n = float(count.sum())
    resid = max(0.0, sumsq - float(base.sum())) / n if n > 0 else 0.0
    return base + count * resid


class ActivationObserverMixin(_REQuantMixinBase):
    """REQuant for activations: streamed histogram statistics, alpha search at the end.

    ``forward`` adds each batch to a :class:`~requant_plugin.core.StreamingHistogram` (``bins``
    bins anchored at zero with exact per-bin counts and sums; when a batch falls outside the
    window the width doubles and bins merge exactly). The binning is vectorised: NumPy on the
    CPU (``np.bincount``), torch on other devices. ``calculate_qparams`` runs the alpha search
    on the histogram (``L(alpha)`` with each bin collapsed to its mean for the code assignment)
    and returns ``_calculate_qparams(alpha * min, alpha * max)``.

    Buffers (saved in ``state_dict``): ``min_val``/``max_val`` (running range, ``+-inf`` before
    data), ``hist_meta`` (width, offset, min, max, bins) and ``hist_count``, ``hist_sum``,
    ``hist_sumsq`` (empty before data).
    """

    _resizable = ("hist_count", "hist_sum", "hist_sumsq")
    min_val: Tensor
    max_val: Tensor
    hist_meta: Tensor
    hist_count: Tensor
    hist_sum: Tensor
    hist_sumsq: Tensor

    def __init__(
        self,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
        *,
        search: Search = "golden",
        alpha: float | None = None,
        bins: int = 2048,
        grid_points: int = 2000,
        **kwargs: Any,
    ) -> None:
        """Args beyond torch's observer arguments:

        search: ``"golden"`` (default), ``"grid"`` (dense reference over ``grid_points``
            alphas) or ``"minmax"`` (``alpha = 1``: exactly torch's ``MinMaxObserver``).
        alpha: pin the range factor instead of searching.
        bins: histogram resolution (the range itself grows without limit).
        """
        super().__init__(  # type: ignore[call-arg]
            dtype=dtype, qscheme=qscheme, reduce_range=reduce_range, quant_min=quant_min,
            quant_max=quant_max, factory_kwargs=factory_kwargs, eps=eps, is_dynamic=is_dynamic, **kwargs,
        )
        if self.qscheme not in _PER_TENSOR:
            raise ValueError(
                f"{type(self).__name__} is a per-tensor activation observer: qscheme must be "
                f"per_tensor_affine or per_tensor_symmetric, got {self.qscheme}"
            )
        self._setup_requant(search, alpha, grid_points)
        if int(bins) < 16:
            raise ValueError(f"bins must be at least 16, got {bins}")
        self.bins = int(bins)
        fk = torch.nn.factory_kwargs(factory_kwargs)
        self.register_buffer("min_val", torch.tensor(float("inf"), **fk))
        self.register_buffer("max_val", torch.tensor(float("-inf"), **fk))
        dev = fk.get("device")
        meta = torch.tensor([0.0, 0.0, math.inf, -math.inf, float(self.bins)], dtype=torch.float64,
                            device=dev)
        self.register_buffer("hist_meta", meta)
        for name in self._resizable:
            self.register_buffer(name, torch.tensor([], dtype=torch.float64, device=dev))
        self._cache: tuple[tuple[float, ...], tuple[Tensor, Tensor], float] | None = None
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
        with torch.no_grad():
            x = x_orig.detach()
            on_cpu = x.device.type == "cpu" and not self.force_torch_binning
            if on_cpu:
                v = x.to(torch.float32 if x.dtype != torch.float64 else torch.float64).contiguous()
                arr = v.numpy().reshape(-1)
                lo, hi = float(arr.min()), float(arr.max())
            else:
                lo_t, hi_t = torch.aminmax(x.reshape(-1).to(torch.float32))
                lo, hi = float(lo_t), float(hi_t)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(
                    f"{type(self).__name__} received NaN/Inf activations: REQuant needs finite values "
                    "(check the model's numerics or the calibration inputs)"
                )
            hist = self.histogram()
            width, offset, rebuild = _batch_window(hist, lo, hi, self.bins)
            if rebuild:
                hist = _rebase(hist, width, self.bins)
            if on_cpu:
                count, total, sumsq = _bin_numpy(arr, width, offset, self.bins)
            else:
                count, total, sumsq = _bin_torch(x, width, offset, self.bins)
            batch = StreamingHistogram.from_state({
                "meta": np.array([width, float(offset), lo, hi, float(self.bins)]),
                "count": count, "sum": total, "sumsq": _spread_sumsq(count, total, sumsq),
            })
            hist.merge(batch)
            self._store(hist)
        self._cache = None
        return x_orig

    def calculate_qparams(self, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """Search alpha on the histogram; ``_calculate_qparams(alpha * min, alpha * max)``."""
        hist = self.histogram()
        if hist.empty:
            return self._default_qparams()
        key = (hist.total, hist.width, float(hist.offset), hist.min, hist.max)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        if self.fixed_alpha is not None:
            alpha = self.fixed_alpha
        else:
            est = hist.estimate(self.grid, search=self._core_search(), grid_points=self.grid_points)
            alpha = float(est.alpha[0])
        dev = self.eps.device
        lo = torch.tensor(alpha * hist.min, dtype=torch.float64, device=dev)
        hi = torch.tensor(alpha * hist.max, dtype=torch.float64, device=dev)
        result = self._qparams_for_range(lo, hi)
        self._cache = (key, result, alpha)
        return result

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
        return None if self._cache is None else self._cache[2]

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


__all__ = [
    "RELU_MEAN_RATIO", "SEARCH_CHOICES", "ActivationObserverMixin", "CoherentErrorObjective",
    "PerChannelWeightObserverMixin", "Search", "WeightObserverMixin", "WeightSpace", "observer_grid",
    "symmetric_zero_point",
]
