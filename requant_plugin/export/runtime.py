"""ONNX Runtime on CPU for the export: a session for a model, and a model exposing inner tensors.

Calibration runs the FP32 graph with the tensors to quantize exposed as extra outputs
(:func:`with_outputs`); verification runs the Q/DQ graph as written (``optimize=False``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..deps import require


def with_outputs(model: Any, tensors: Sequence[str]) -> Any:
    """A copy of ``model`` whose graph also outputs ``tensors`` (types left to the runtime)."""
    onnx = require("onnx", "requant_plugin.export")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    for name in tensors:
        if name not in present:
            out.graph.output.append(onnx.ValueInfoProto(name=name))
    return out


def session(model: Any, *, optimize: bool = True, threads: int = 0) -> Any:
    """A CPU ONNX Runtime session for a ModelProto or a path (``optimize=False``: ORT_DISABLE_ALL)."""
    ort = require("onnxruntime", "requant_plugin.export")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if isinstance(model, (str, os.PathLike)):
        src: str | bytes = os.fspath(model)
    elif isinstance(model, bytes):
        src = model
    else:
        src = model.SerializeToString()
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
