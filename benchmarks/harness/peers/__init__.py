"""Peer range estimators, one module per family, each exposing
``quantize_weight(w, bits, *, per_channel, symmetric, ch_axis=0) -> fake-quantized tensor``
plus ``NAME`` and ``EVALUATIONS`` (loss evaluations per tensor; ``None`` when counted at run
time). :func:`get` imports a peer lazily and says why when it cannot be used.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: key -> (module, native grid kind shown in tables)
PEERS: dict[str, tuple[str, str]] = {
    "minmax": ("minmax", "asym"),
    "percentile": ("percentile", "asym"),
    "aciq": ("aciq", "asym"),
    "torch_hist": ("torch_hist", "asym"),
    "torchao_mse": ("torchao_mse", "asym mapping, sym candidates"),
    "modelopt_mse": ("modelopt_mse", "sym (TensorRT)"),
    "brevitas_mse": ("brevitas_mse", "asym (shifted uint)"),
}


def get(key: str) -> ModuleType:
    """The adapter module for ``key`` (raises ImportError naming the missing package)."""
    if key not in PEERS:
        raise KeyError(f"unknown peer {key!r}; known: {sorted(PEERS)}")
    mod = importlib.import_module(f"{__name__}.{PEERS[key][0]}")
    if key == "brevitas_mse":
        try:
            import brevitas  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "brevitas is not installed: pip install --no-deps brevitas 'dependencies==2.0.1' unfoldNd"
            ) from exc
    if key == "torchao_mse":
        import torchao  # noqa: F401
    return mod


def availability(key: str) -> str | None:
    """``None`` when the peer can run here, else the reason it cannot."""
    try:
        get(key)
    except ImportError as exc:
        return str(exc)
    return None
