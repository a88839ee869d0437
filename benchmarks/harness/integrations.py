"""The ONE bridge from the benchmarks to code that lives only in an integration script.

The reusable parts of ``integrations/fx_qconfig.py`` and ``integrations/pt2e_quantize.py`` now live
in the package (``requant_plugin.observers.flows``: prepare/calibrate/convert, Q/DQ counting;
``requant_plugin.observers.scripts``: task loading, quiet logs) and the benchmarks import them
from there. What is still script-only (the pt2e comparison table's ``configurations``) is loaded
here by file path (no ``sys.path`` edit), under the script's module name; moving it into the
package is a change to this file only.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from benchmarks.harness.paths import INTEGRATIONS


def load_integration(name: str) -> ModuleType:
    """``integrations/<name>.py`` as module ``name`` (loaded once, then taken from ``sys.modules``)."""
    if name in sys.modules:
        return sys.modules[name]
    path = INTEGRATIONS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the integration script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and sibling imports look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def pt2e_configurations() -> Callable[..., list[tuple[str, str, Any]]]:
    """``configurations(weight_bits, act_bits, backend, variants=False)`` of
    ``integrations/pt2e_quantize.py``: the (key, label, quantizer) rows of the pt2e comparison."""
    fn: Callable[..., list[tuple[str, str, Any]]] = load_integration("pt2e_quantize").configurations
    return fn
