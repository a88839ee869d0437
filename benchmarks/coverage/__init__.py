"""Coverage matrix: every architecture of ``benchmarks.archs`` through every path of the library
(``quantize_weights`` recipes, FX W8A8, pt2e W8A8/W4A8 on the x86 and XNNPACK quantizers, ONNX Q/DQ
export + TensorRT rules + ONNX Runtime), with status, wall time and output error against FP32.

``python -m benchmarks.coverage`` writes docs/coverage.md; ``--quick`` is the CI subset. Modules:
:mod:`.paths` (the paths), :mod:`.cells` (one isolated cell and the status rule), :mod:`.models`
(architectures and inputs), :mod:`.run` (the matrix and its cache), :mod:`.doc`, :mod:`.cli`.
"""

from benchmarks.coverage.cells import CLEAR, FAILURE, OK, TIMEOUT, classify, compare, run_cell
from benchmarks.coverage.paths import PATHS, W8A8_PATHS, CellFailure
from benchmarks.coverage.run import Matrix, Settings, run_matrix

__all__ = ["CLEAR", "FAILURE", "OK", "PATHS", "TIMEOUT", "W8A8_PATHS", "CellFailure", "Matrix", "Settings",
           "classify", "compare", "run_cell", "run_matrix"]
