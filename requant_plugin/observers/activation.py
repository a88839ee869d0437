"""The REQuant activation observer: a thin adapter over :class:`~requant_plugin.calib.HistogramCalibrator`.

``forward`` adds each batch to the calibrator's streaming histogram (exact tails, a weighted
subsample of the rest: :mod:`requant_plugin.calib.sampling`); ``calculate_qparams`` runs the
alpha search on it (``L(alpha)`` with each bin at the code of its mean, bins that straddle a
rounding threshold split: :class:`~requant_plugin.core.binned.BinnedObjective`) and returns
``_calculate_qparams(f * alpha * min, f * alpha * max)``. The range ``[min, max]`` is always
exact (``alpha = 1`` equals torch's ``MinMaxObserver``).

Buffers (saved in ``state_dict``): ``min_val``/``max_val`` (running range, ``+-inf`` before
data), ``hist_meta`` (width, offset, min, max, bins), ``hist_count``, ``hist_sum``,
``hist_sumsq`` (empty before data) and ``range_factor`` (1.0; a ``state_dict`` saved before it
existed loads with 1.0).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from ..calib.histogram import HistogramCalibrator
from ..calib.sampling import DEFAULT_SAMPLE_SIZE
from ..core import StreamingHistogram
from ..options import Search
from .base import PER_TENSOR, ObserverMixinBase

__all__ = ["DEFAULT_SAMPLE_SIZE", "SCALE_FLOOR_LOSS", "ActivationObserverMixin", "ScaleFloorWarning"]

#: a calibrated range is reported when the smallest scale (``eps``) is at least this many times the scale the
#: range needs: its values then get at most 1/SCALE_FLOOR_LOSS of the codes (more than 2 bits lost)
SCALE_FLOOR_LOSS = 4.0


class ScaleFloorWarning(UserWarning):
    """An activation range so small that the observer's minimum scale ``eps`` leaves it few codes."""


class ActivationObserverMixin(ObserverMixinBase):
    """REQuant for activations: streamed histogram statistics, alpha search at the end."""

    calibrator: HistogramCalibrator
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
        search: Search | str = "golden",
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
        if self.qscheme not in PER_TENSOR:
            raise ValueError(
                f"{type(self).__name__} is a per-tensor activation observer: qscheme must be "
                f"per_tensor_affine or per_tensor_symmetric, got {self.qscheme}"
            )
        self._setup_requant(search, alpha, grid_points)
        self.calibrator = HistogramCalibrator(
            self._buffers, grid=self.grid, bins=bins, sample_size=sample_size, search=self._core_search(),
            fixed_alpha=self.fixed_alpha, grid_points=self.grid_points, name=type(self).__name__,
            **self._factory_kwargs(),
        )
        self.bins = self.calibrator.bins
        self.sample_size = self.calibrator.sample_size

    @property
    def force_torch_binning(self) -> bool:
        """Use the torch binning path (the one of CUDA tensors) on the CPU too (tests)."""
        return self.calibrator.force_torch_binning

    @force_torch_binning.setter
    def force_torch_binning(self, value: bool) -> None:
        self.calibrator.force_torch_binning = bool(value)

    def histogram(self) -> StreamingHistogram:
        """The statistics so far as a core :class:`StreamingHistogram` (a copy)."""
        return self.calibrator.histogram()

    def forward(self, x_orig: Tensor) -> Tensor:
        """Add the batch to the histogram; returns ``x_orig`` unchanged."""
        if self._check_input(x_orig):
            self.calibrator.collect(x_orig)
        return x_orig

    def calculate_qparams(self, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """Search alpha on the histogram; ``_calculate_qparams(f * alpha * min, f * alpha * max)``
        with ``f`` the ``range_factor`` buffer (1 unless :meth:`set_range_factor` changed it)."""
        rng = self.calibrator.compute_range()
        if rng is None:
            return self._default_qparams()
        self._check_scale_floor()
        return self._qparams_for_range(rng.lo.to(self.eps.device), rng.hi.to(self.eps.device))

    def _check_scale_floor(self) -> None:
        """Warn (:class:`ScaleFloorWarning`) when the observed ``[min, max]`` needs a scale of at most
        ``eps / SCALE_FLOOR_LOSS``: ``need = (max(max, 0) - min(min, 0)) / (quant_max - quant_min)`` (symmetric:
        ``2 max(|min|, |max|)`` over the same), the scale that torch's rule then raises to ``eps``."""
        lo, hi = float(self.min_val), float(self.max_val)
        neg, pos = min(lo, 0.0), max(hi, 0.0)
        steps = int(self.quant_max) - int(self.quant_min)
        need = (2.0 * max(-neg, pos) if self.symmetric else pos - neg) / steps
        eps = float(self.eps)
        if need > 0.0 and need * SCALE_FLOOR_LOSS <= eps:
            warnings.warn(
                f"{type(self).__name__}: the observed activation range [{lo:.3g}, {hi:.3g}] needs a scale of "
                f"{need:.3g}, but this observer's smallest scale (eps) is {eps:.3g}, so these values get about "
                f"{max(1, round(steps * need / eps))} of the {steps + 1} codes (values within {eps / 2:.3g} of "
                "the zero point round to it). If they matter (e.g. a near-zero branch of a randomly initialised "
                "or heavily down-scaled network), pass a smaller eps: get_requant_quantizer(..., eps=1e-7) or "
                "ObserverSpec(eps=...)", ScaleFloorWarning, stacklevel=3)

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
        self.calibrator.set_range_factor(factor)

    def merge(self, other: ActivationObserverMixin) -> None:
        """Add another observer's statistics (e.g. another process's) by exact histogram merging."""
        if not isinstance(other, ActivationObserverMixin):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        self.calibrator.merge(other.calibrator)

    @property
    def last_alpha(self) -> float | None:
        """The range factor of the last ``calculate_qparams`` (``None`` before it ran)."""
        return self.calibrator.last_alpha

    def reset_min_max_vals(self) -> None:
        """Forget every statistic."""
        self.calibrator.reset()

    def extra_repr(self) -> str:
        return (f"search={self.search}, bins={self.bins}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, qscheme={self.qscheme}, min_val={float(self.min_val)}, "
                f"max_val={float(self.max_val)}")
