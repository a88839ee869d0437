"""Whole-model post-training quantization built on the core search."""

from .bn_fold import conv_bn_pairs, fold_bn_
from .report import LayerReport, QuantizationReport
from .weights import QUANTIZABLE, quantizable_layers, quantize_weights, weight_ch_axis

__all__ = [
    "QUANTIZABLE", "LayerReport", "QuantizationReport", "conv_bn_pairs", "fold_bn_",
    "quantizable_layers", "quantize_weights", "weight_ch_axis",
]
