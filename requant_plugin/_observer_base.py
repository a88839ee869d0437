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
* **activations**: :class:`requant_plugin._activation_observer.ActivationObserverMixin` (its own
  module) streams histogram statistics and runs the same search at ``calculate_qparams``.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from .core import CoherentErrorObjective, Grid, golden_search, grid_search, objective_for_rows
from .range import estimate_range, rows_of

Search = Literal["golden", "grid", "minmax"]
SEARCH_CHOICES: tuple[str, ...] = ("golden", "grid", "minmax")
WeightSpace = Literal["uniform", "sqrt"]
_SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric)
_UNSIGNED = (torch.quint8, torch.uint8)
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


def tensor_key(x: Tensor) -> tuple[Any, ...]:
    """Identity of a weight tensor's current contents: storage, offset, shape, strides, dtype,
    device, version counter and a float64 checksum (the checksum guards against a new tensor
    reusing a freed one's memory). Weight observers skip tensors whose key they have seen."""
    try:
        version: int | None = x._version
    except RuntimeError:  # inference tensors carry no version counter
        version = None
    with torch.no_grad():
        checksum = float(x.detach().double().sum()) if x.numel() else 0.0
    return (x.data_ptr(), x.storage_offset(), tuple(x.shape), tuple(x.stride()), x.dtype,
            str(x.device), version, checksum)


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

    def _factory_kwargs(self) -> dict[str, Any]:
        """Device and dtype of torch's ``factory_kwargs``, read back from the ``eps`` buffer the base
        class created with them (the mixins pass torch's arguments through untouched)."""
        return {"device": self.eps.device, "dtype": self.eps.dtype}

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
        *args: Any,
        search: Search = "golden",
        alpha: float | None = None,
        space: WeightSpace = "uniform",
        p: float = 0.5,
        grid_points: int = 2000,
        input_mean_ratio: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """The arguments after ``qscheme`` (``reduce_range``, ``quant_min``, ``quant_max``,
        ``factory_kwargs``, ``eps``, ``is_dynamic``) are torch's, passed on unchanged. Beyond them:

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
        super().__init__(dtype, qscheme, *args, **kwargs)  # type: ignore[call-arg]
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
        fk = self._factory_kwargs()
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
        key = tensor_key(x_orig)
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
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """``ch_axis``: the channel axis (0 = output channels of conv/linear weights); the rest as
        :class:`WeightObserverMixin` (torch's ``PerChannelMinMaxObserver`` argument order)."""
        super().__init__(dtype, qscheme, *args, **kwargs)
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


__all__ = [
    "RELU_MEAN_RATIO", "SEARCH_CHOICES", "CoherentErrorObjective", "PerChannelWeightObserverMixin", "Search",
    "WeightObserverMixin", "WeightSpace", "observer_grid", "symmetric_zero_point",
]
