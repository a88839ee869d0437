"""Optional dependencies: one extras table and one lazy-import helper with an install hint.

Every optional import in the package (torchao, lightning, onnx, tensorrt, matplotlib, ...)
goes through :func:`require`, so a missing package always raises the same
:class:`MissingDependency` (an ``ImportError``) naming what needed it and the pip extra that
installs it; :func:`available` asks without importing.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["EXTRAS", "MissingDependency", "available", "install_hint", "require"]

#: The pip extra of ``requant-plugin`` that provides each optional top-level module.
EXTRAS: dict[str, str] = {
    "matplotlib": "plots",
    "mkdocs": "docs",
    "onnx": "onnx",
    "onnx_graphsurgeon": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "polygraphy": "onnx",
    "pytorch_lightning": "pytorch-lightning",
    "lightning": "lightning",
    "sklearn": "data",
    "tensorrt": "tensorrt",
    "torchao": "pt2e",
}


class MissingDependency(ImportError):
    """An optional package is not installed; the message names the purpose and the install command."""


def install_hint(module: str) -> str:
    """``pip install 'requant-plugin[<extra>]'`` for the extra that provides ``module``."""
    extra = EXTRAS.get(module.split(".")[0], "all")
    return f"pip install 'requant-plugin[{extra}]'"


def available(module: str) -> bool:
    """True when ``module`` (a top-level name or dotted path) can be imported; imports nothing."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


def require(module: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming ``purpose`` and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = purpose or "this feature"
        raise MissingDependency(
            f"{what} needs the optional package {module.split('.')[0]!r}, which could not be "
            f"imported ({exc}); install it with: {install_hint(module)}"
        ) from exc
