"""torch.ao ``HistogramObserver`` used as a weight-range estimator (per-tensor only).

The observer sees the weight tensor once (2048-bin histogram) and its greedy L2 search
returns ``(scale, zero_point)``, which we apply with the torch.ao formulas. The observer's
error model assumes ``2**8`` destination bins whatever ``quant_min/quant_max`` say
(``dst_nbins = 2 ** torch.iinfo(dtype).bits``), so at 3-6 bits it optimises for the wrong
grid: that is the behaviour users get, and what we measure.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ._quant import fake_quant_rows, rows, unrows

NAME = "torch.ao HistogramObserver"
EVALUATIONS = None  # greedy: counted at run time by search_cost.py


def observer(bits: int, symmetric: bool) -> Any:
    """A fresh ``HistogramObserver`` for a ``bits``-bit grid."""
    from torch.ao.quantization.observer import HistogramObserver

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if symmetric:
            return HistogramObserver(
                dtype=torch.qint8,
                qscheme=torch.per_tensor_symmetric,
                quant_min=-(2 ** (bits - 1)),
                quant_max=2 ** (bits - 1) - 1,
            )
        return HistogramObserver(
            dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=0, quant_max=2**bits - 1
        )


def quantize_weight(
    w: torch.Tensor, bits: int, *, per_channel: bool = False, symmetric: bool = False, ch_axis: int = 0
) -> torch.Tensor:
    """Fake-quantize ``w`` with the range HistogramObserver picks (per tensor)."""
    if per_channel:
        raise NotImplementedError("HistogramObserver is per-tensor only")
    obs = observer(bits, symmetric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs(w.detach().float())
        scale, zp = obs.calculate_qparams()
    qmin, qmax = int(obs.quant_min), int(obs.quant_max)
    r = rows(w, False)
    out = fake_quant_rows(r, scale.double().reshape(1), zp.double().reshape(1), qmin, qmax)
    return unrows(out, w, False)
