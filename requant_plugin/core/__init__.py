"""Pure math of REQuant: grids, the power transform, the objective and its search.

NumPy only: nothing here imports torch or a host framework, so every integration (torch.ao,
torchao pt2e, Lightning, ONNX/TensorRT) is a thin adapter over these functions. The option
values (spaces, searches, loss spaces, conventions, bit widths) are those of
:mod:`requant_plugin.options`, declared there once.
"""

from .binned import BinnedObjective, HistogramBins
from .coherent import CoherentErrorObjective
from .estimate import RowEstimate, estimate_rows, objective_for_rows, row_blocks, run_search
from .grid import EPS, Grid, fake_quantize_np
from .histogram import StreamingHistogram
from .objective import PointMoments, RangeObjective
from .search import SearchResult, golden_search, grid_search, minmax_search
from .transform import PowerTransform

__all__ = [
    "EPS", "BinnedObjective",
    "CoherentErrorObjective", "Grid", "HistogramBins", "PointMoments", "PowerTransform", "RangeObjective",
    "RowEstimate", "SearchResult", "StreamingHistogram",
    "estimate_rows", "fake_quantize_np", "golden_search", "grid_search", "minmax_search",
    "objective_for_rows", "row_blocks",
    "run_search",
]
