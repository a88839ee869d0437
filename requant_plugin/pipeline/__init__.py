"""The ``requant quantize`` / ``requant demo`` job as a library.

Example::

    from requant_plugin.pipeline import PipelineConfig, run_pipeline
    result = run_pipeline(PipelineConfig(data="digits", bits=(8, 4), report="reports/digits"))
    print(result.accuracy[4])        # {'minmax': ..., 'requant': ..., 'requant_sqrt': ...}
"""

from .config import METHOD_LABELS, ExportSummary, LayerRow, PipelineConfig, PipelineResult
from .errors import UsageError, install_hint, require_module
from .run import run_pipeline
from .tables import accuracy_table, layer_table
from .workload import SMALL_CNN, Workload, load_workload, model_choices

__all__ = [
    "METHOD_LABELS", "SMALL_CNN", "ExportSummary", "LayerRow", "PipelineConfig", "PipelineResult",
    "UsageError", "Workload", "accuracy_table", "install_hint", "layer_table", "load_workload",
    "model_choices", "require_module", "run_pipeline",
]
