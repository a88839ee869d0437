"""Lazy imports of the optional ONNX stack, with an ImportError that names the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

ONNX_HINT = "pip install 'requant-plugin[onnx]'"
TENSORRT_HINT = "pip install 'requant-plugin[tensorrt]'"


def require(module: str, extra: str = "onnx") -> ModuleType:
    """Import ``module`` or raise ImportError telling which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = TENSORRT_HINT if extra == "tensorrt" else ONNX_HINT
        raise ImportError(
            f"requant_plugin.export needs the optional package {module.split('.')[0]!r} "
            f"({exc}); install it with: {hint}"
        ) from exc


def onnx() -> ModuleType:
    """The ``onnx`` package."""
    return require("onnx")


def ort() -> ModuleType:
    """The ``onnxruntime`` package."""
    return require("onnxruntime")
