"""The export's inputs: the first calibration batch, and the FP32 ONNX graph to quantize.

The model is a torch ``nn.Module`` (exported here with BatchNorm folded, dynamic batch), an
ONNX file path or an ``onnx.ModelProto`` (FP32, opset 13..20, not already quantized).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..deps import require
from .calibrate import as_batch
from .config import MAX_OPSET, MIN_OPSET

QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"})


class SizedIterable:
    """An iterable with a known length (for the progress bar)."""

    def __init__(self, it: Iterable[Any], n: int) -> None:
        self.it, self.n = it, n

    def __iter__(self) -> Iterator[Any]:
        return iter(self.it)

    def __len__(self) -> int:
        return self.n


def first_batch(calibration_data: Iterable[Any]) -> tuple[np.ndarray, Iterable[Any]]:
    """``(first batch as float32, all batches again)``, reading ``calibration_data`` once.

    Raises ValueError when it is empty; a sized input stays sized (for the progress bar).
    """
    items = iter(calibration_data)
    try:
        first = next(items)
    except StopIteration:
        raise ValueError("calibration_data is empty: pass at least one batch of inputs") from None
    rest: Iterable[Any] = itertools.chain([first], items)
    try:
        n = len(calibration_data)  # type: ignore[arg-type]
        rest = SizedIterable(rest, n)
    except TypeError:
        pass
    return as_batch(first), rest


def load_fp32(model: Any, example: np.ndarray, opset: int) -> tuple[Any, dict[str, str], bool]:
    """``(FP32 ModelProto, {ONNX node: torch layer name}, BatchNorm folded)`` for ``model``."""
    onnx = require("onnx", "requant_plugin.export")
    if isinstance(model, nn.Module):
        from .torch_export import export_fp32_onnx

        return export_fp32_onnx(model, torch.from_numpy(example), opset=opset)
    proto = onnx.load(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else model
    if not hasattr(proto, "graph"):
        raise TypeError(
            f"model must be a torch nn.Module, an ONNX path or a ModelProto, got {type(model).__name__}"
        )
    ops = {n.op_type for n in proto.graph.node}
    if ops & QUANTIZED_OPS:
        raise ValueError("the ONNX model is already quantized; pass the FP32 model")
    version = next((int(i.version) for i in proto.opset_import if i.domain in ("", "ai.onnx")), 0)
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise ValueError(
            f"the ONNX model has opset {version}; convert it to {MIN_OPSET}..{MAX_OPSET} first "
            "(onnx.version_converter.convert_version)"
        )
    return proto, {}, False
