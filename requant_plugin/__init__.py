"""requant-plugin: REQuant post-training quantization range estimation for PyTorch tools.

Core API::

    from requant_plugin import estimate_range, quantize_weights
    est = estimate_range(conv.weight, bits=4, space="sqrt")      # RangeEstimate
    qmodel, report = quantize_weights(model, bits=4)              # weights-only PTQ
    print(report)                                                 # per-layer alpha / MSE table
    cfg = dataclasses.replace(RECIPES["beyond"], bits=3)          # recipes are plain configs
    qmodel, report = quantize_weights(model, cfg, calibration_data=batches)

Integrations live in submodules that import their host framework lazily:
``requant_plugin.observers`` (torch.ao FX), ``requant_plugin.pt2e`` (torchao),
``requant_plugin.lightning`` / ``requant_plugin.pytorch_lightning`` and
``requant_plugin.export`` (ONNX Q/DQ for TensorRT).
"""

from __future__ import annotations

from typing import Any

from .options import PerChannel, PerTensor
from .ptq import RECIPES, QuantizationReport, QuantizeConfig, quantize_weights
from .range import RangeEstimate, RangeSpec, estimate_range

__version__ = "0.1.0"

# torch.ao's qconfig machinery is imported only when these are asked for (importing it warns)
_LAZY = {
    "get_requant_qconfig_mapping": "requant_plugin.qconfig",
    "get_requant_qconfig": "requant_plugin.qconfig",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'requant_plugin' has no attribute {name!r}")


__all__ = [
    "RECIPES", "PerChannel", "PerTensor", "QuantizationReport", "QuantizeConfig", "RangeEstimate",
    "RangeSpec", "__version__", "estimate_range", "get_requant_qconfig", "get_requant_qconfig_mapping",
    "quantize_weights",
]
