"""User-facing errors of the command-line pipeline.

A :class:`UsageError` is something the user can fix (a missing file, an unknown name, an
optional extra that is not installed). The CLI prints its message on one line and exits with
status 2, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRA_FOR_MODULE", "UsageError", "install_hint", "require_module"]

#: The pip extra that provides each optional import.
EXTRA_FOR_MODULE: dict[str, str] = {
    "matplotlib": "plots",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "polygraphy": "onnx",
    "sklearn": "data",
    "torchao": "pt2e",
    "lightning": "lightning",
    "pytorch_lightning": "pytorch-lightning",
    "tensorrt": "tensorrt",
    "mkdocs": "docs",
}


class UsageError(Exception):
    """A problem with the user's input or environment, reported as one line (exit status 2)."""


def install_hint(module: str) -> str:
    """``pip install 'requant-plugin[<extra>]'`` for the extra that provides ``module``."""
    extra = EXTRA_FOR_MODULE.get(module.split(".")[0], "all")
    return f"pip install 'requant-plugin[{extra}]'"


def require_module(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`UsageError` naming ``purpose`` and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(
            f"{purpose} needs the optional package {module!r}, which is not installed "
            f"({exc}); install it with: {install_hint(module)}"
        ) from exc
