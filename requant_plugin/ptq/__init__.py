"""Whole-model post-training quantization built on the core search.

``quantize_weights(model, config_or_recipe, calibration_data)`` with a frozen
:class:`QuantizeConfig` (per-layer :class:`LayerOverride`), or one of the named :data:`RECIPES`.
"""

from .bn_fold import conv_bn_pairs, fold_bn_
from .config import LayerOverride, QuantizeConfig, first_last, layer_space
from .mixed_precision import allocate_bits, layer_error_curves, mixed_precision_bits, weight_counts, width_summary
from .plan import QUANTIZABLE, LayerPlan, quantizable_layers, weight_ch_axis
from .recipes import RECIPES, make_config
from .report import LayerReport, QuantizationReport
from .weights import quantize_beyond, quantize_weights

__all__ = [
    "QUANTIZABLE", "RECIPES", "LayerOverride", "LayerPlan", "LayerReport", "QuantizationReport",
    "QuantizeConfig", "allocate_bits", "conv_bn_pairs", "first_last", "fold_bn_", "layer_error_curves",
    "layer_space", "make_config", "mixed_precision_bits", "quantizable_layers", "quantize_beyond",
    "quantize_weights", "weight_ch_axis", "weight_counts", "width_summary",
]
