"""Activation statistics on ONNX tensor names, and REQuant per-tensor INT8 scales from them.

The FP32 ONNX model runs in ONNX Runtime (:mod:`.runtime`) with the tensors to quantize exposed
as extra outputs; each feeds a :class:`~requant_plugin.calib.HistogramCalibrator` in exact mode
(every value binned in float64: an exact-moment :class:`~requant_plugin.core.StreamingHistogram`). The
scale is REQuant's symmetric search on that histogram with TensorRT's convention:
``s = alpha * amax / 127`` on the grid ``[-128, 127]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..calib.histogram import HistogramCalibrator
from ..core import Grid, StreamingHistogram
from .runtime import session, with_outputs


def as_batch(item: Any) -> np.ndarray:
    """A calibration item as a float32 NumPy batch: a tensor/array, or the first of a tuple."""
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError("calibration data yielded an empty tuple")
        item = item[0]
    if hasattr(item, "detach"):
        item = item.detach().cpu()
        if item.is_floating_point():
            item = item.float()  # bfloat16 has no NumPy dtype
        item = item.numpy()
    arr = np.asarray(item)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"calibration batches must be floating point, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def collect_histograms(
    model: Any,
    tensors: Sequence[str],
    batches: Iterable[Any],
    *,
    bins: int = 2048,
    progress: bool = False,
) -> tuple[dict[str, StreamingHistogram], int]:
    """Run ``batches`` through the FP32 ``model`` and histogram each of ``tensors``.

    Returns the histograms and the number of calibration samples seen. Raises ValueError
    when ``batches`` is empty or a tensor holds NaN/Inf.
    """
    calibrators = {t: HistogramCalibrator(bins=bins, exact=True, name=t) for t in tensors}
    sess = session(with_outputs(model, tensors))
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"the model has {len(inputs)} inputs; export_onnx_qdq supports one image input")
    in_name = inputs[0].name
    total: int | None
    try:
        total = len(batches)  # type: ignore[arg-type]
    except TypeError:
        total = None
    from tqdm.auto import tqdm

    seen = 0
    for item in tqdm(batches, total=total, desc="calibration", unit="batch", disable=not progress):
        x = as_batch(item)
        values = sess.run(list(tensors), {in_name: x})
        for name, value in zip(tensors, values, strict=False):
            try:
                calibrators[name].collect(value)
            except ValueError as exc:
                raise ValueError(f"activation {name!r}: {exc} during calibration") from exc
        seen += int(x.shape[0]) if x.ndim else 1
    if seen == 0:
        raise ValueError("calibration_data yielded no batch: pass at least one batch of inputs")
    return {t: c.histogram() for t, c in calibrators.items()}, seen


def int8_scale(hist: StreamingHistogram, *, search: str = "golden") -> tuple[float, float, float]:
    """REQuant symmetric INT8 scale of a histogram: ``(scale, alpha, amax)`` (TensorRT convention)."""
    grid = Grid.from_bits(8, symmetric=True, convention="tensorrt")
    est = hist.estimate(grid, search=search)
    amax = max(abs(hist.min), abs(hist.max))
    scale = float(est.scale[0])
    if not np.isfinite(scale) or scale <= float(np.finfo(np.float32).tiny):
        scale = 1.0
    return scale, float(est.alpha[0]), amax
