"""NVIDIA ModelOpt's ``mse`` weight calibrator, re-implemented from its documentation.

ModelOpt (``modelopt/torch/quantization/calib/mse.py``) starts from the ``max`` calibration
``amax`` and tries ``amax * m`` for multipliers from ``start_multiplier = 0.25`` to
``stop_multiplier = 4.0``; its docstring gives the number of steps as
``ceil((stop - start) / step_size) + 1 = 39`` for ``step_size = 0.1``. We use
``m = linspace(0.25, 4.0, 39)`` (step 0.0987). Each candidate fake-quantizes the weight
with ModelOpt's (TensorRT) symmetric integer quantizer, ``scale = amax / (2**(b-1) - 1)``,
clamp ``[-2**(b-1), 2**(b-1) - 1]`` (``narrow_range=False``), and the weight-space MSE picks
the winner per tensor or per channel (``axis``). ModelOpt's integer path is symmetric only,
so ``symmetric=False`` is ignored (the table says so). Only 8 of the 39 multipliers are
below 1 and none is exactly 1, so at 8 bits the grid cannot return plain max calibration.
"""

from __future__ import annotations

import numpy as np
import torch

from ._quant import EPS, fake_quant_rows, rows, unrows

NAME = "ModelOpt mse (39-pt amax grid)"
EVALUATIONS = 39
MULTIPLIERS = np.linspace(0.25, 4.0, 39)


def quantize_weight(
    w: torch.Tensor, bits: int, *, per_channel: bool = False, symmetric: bool = True, ch_axis: int = 0
) -> torch.Tensor:
    """Fake-quantize ``w`` with the best of the 39 ``amax`` multipliers (symmetric, TensorRT scale)."""
    r = rows(w, per_channel, ch_axis)
    amax = r.abs().amax(1)
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    zero = torch.zeros_like(amax)
    best = torch.full_like(amax, float("inf"))
    best_scale = torch.clamp(amax / qmax, min=EPS)
    for m in MULTIPLIERS:
        scale = torch.clamp(amax * float(m) / qmax, min=EPS)
        err = (fake_quant_rows(r, scale, zero, qmin, qmax) - r).pow(2).mean(1)
        better = err < best
        best = torch.where(better, err, best)
        best_scale = torch.where(better, scale, best_scale)
    return unrows(fake_quant_rows(r, best_scale, zero, qmin, qmax), w, per_channel, ch_axis)
