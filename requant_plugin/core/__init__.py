"""Pure math of REQuant: grids, the power transform, the objective and its search.

NumPy only: nothing here imports torch or a host framework, so every integration (torch.ao,
torchao pt2e, Lightning, ONNX/TensorRT) is a thin adapter over these functions.
"""

from .binned import BinnedObjective
from .coherent import CoherentErrorObjective
from .estimate import RowEstimate, estimate_rows, objective_for_rows, run_search
from .grid import EPS, Grid, check_bits, fake_quantize_np
from .histogram import StreamingHistogram
from .objective import LOSS_SPACES, RangeObjective
from .search import SEARCHES, SearchResult, golden_search, grid_search, minmax_search
from .transform import SPACES, PowerTransform, check_space

__all__ = [
    "EPS", "LOSS_SPACES", "SEARCHES", "SPACES", "BinnedObjective",
    "CoherentErrorObjective", "Grid", "PowerTransform", "RangeObjective",
    "RowEstimate", "SearchResult", "StreamingHistogram", "check_bits", "check_space",
    "estimate_rows", "fake_quantize_np", "golden_search", "grid_search", "minmax_search",
    "objective_for_rows",
    "run_search",
]
