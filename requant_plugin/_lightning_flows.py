"""Quantization flows of the Lightning callback: FX and pt2e prepare/convert, and finding their observers."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

_OBS = "activation_post_process"
_FX_DEPRECATION = "torch.ao.quantization is deprecated"
_QUANTIZE_WARNING = "torch.quantize_per_tensor, torch.quantize_per_channel"
_REDUCE_RANGE = "Please use quant_min and quant_max"


@contextlib.contextmanager
def _quiet_torch_ao() -> Iterator[None]:
    """Silence torch.ao's own noise during prepare/convert: the stale FX deprecation notice,
    the ``reduce_range`` notice of torch's default qconfigs and the quantized-tensor warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FX_DEPRECATION, category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=_REDUCE_RANGE, category=UserWarning)
        warnings.filterwarnings("ignore", message=_QUANTIZE_WARNING, category=UserWarning)
        yield


class _FXFlow:
    """torch.ao FX: ``prepare_fx`` -> calibrate -> ``convert_fx``."""

    name = "fx"

    def __init__(self, qconfig_mapping: Any) -> None:
        self.qconfig_mapping = qconfig_mapping

    def prepare(self, model: nn.Module, example: tuple[Any, ...]) -> nn.Module:
        from torch.ao.quantization.quantize_fx import prepare_fx

        with _quiet_torch_ao():
            return prepare_fx(model, self.qconfig_mapping, example)

    def convert(self, prepared: nn.Module) -> nn.Module:
        """``convert_fx`` (lowered x86 kernels); sub-7-bit ranges get the decomposed reference.

        The lowered kernels clamp to the 8-bit container, ignoring ``quant_min``/``quant_max``
        below 7 bits; torch's decomposed reference graph honours them (float q/dq ops).
        """
        from torch.ao.quantization import quantize_fx

        narrow = [r for r in _fx_ranges(prepared) if r[1] - r[0] + 1 < 128]
        with _quiet_torch_ao():
            if narrow:
                out = quantize_fx._convert_to_reference_decomposed_fx(prepared)  # type: ignore[arg-type]
            else:
                out = quantize_fx.convert_fx(prepared)  # type: ignore[arg-type]
        out.eval()
        return out


def _fx_ranges(prepared: nn.Module) -> list[tuple[int, int]]:
    """``(quant_min, quant_max)`` of every activation observer and weight qconfig of a prepared model."""
    obs: list[Any] = [o for _, o, _, _ in _observers(prepared)]
    obs += [wobs for _, _, wobs in _fx_weight_observers(prepared)]
    return [(int(o.quant_min), int(o.quant_max)) for o in obs if hasattr(o, "quant_min")]


def _fx_weight_observers(prepared: nn.Module) -> list[tuple[str, Tensor, nn.Module]]:
    """``(layer label, float weight, fresh weight observer)`` per weighted FX module.

    ``convert_fx`` builds ``qconfig.weight()`` once per module and calls it on the (BN-folded)
    weight; this rebuilds the same observers for the summary. Fused modules are labelled by the
    fused name (``conv1`` rather than ``conv1.0``).
    """
    from torch.ao.nn.intrinsic import _FusedModule

    mods = dict(prepared.named_modules())
    out = []
    for name, mod in mods.items():
        w = getattr(mod, "weight", None)
        qconfig = getattr(mod, "qconfig", None)
        if not isinstance(w, Tensor) or qconfig is None or _OBS in name or qconfig.weight is None:
            continue
        parent, _, leaf = name.rpartition(".")
        label = parent if leaf == "0" and isinstance(mods.get(parent), _FusedModule) else name
        wobs = qconfig.weight()
        if hasattr(wobs, "quant_min") and hasattr(wobs, "calculate_qparams"):
            out.append((label, w.detach().to("cpu"), wobs))
    return out


class _PT2EFlow:
    """torchao pt2e: ``torch.export`` (dynamic batch) -> ``prepare_pt2e`` -> ``convert_pt2e``."""

    name = "pt2e"

    def __init__(self, quantizer: Any) -> None:
        self.quantizer = quantizer

    def prepare(self, model: nn.Module, example: tuple[Any, ...]) -> nn.Module:
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

        dims = tuple({0: torch.export.Dim("batch", min=1)} if isinstance(a, Tensor) and a.dim() > 0
                     else None for a in example)
        try:
            exported = torch.export.export(model, example, dynamic_shapes=dims)
        except Exception as exc:
            raise RuntimeError(
                f"torch.export failed on {type(model).__name__} ({type(exc).__name__}: {exc}); "
                "make the submodule exportable with a dynamic batch dimension or use mode='fx'"
            ) from exc
        return prepare_pt2e(exported.module(), self.quantizer)  # type: ignore[arg-type]

    def convert(self, prepared: nn.Module) -> nn.Module:
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        with _quiet_torch_ao():
            out = convert_pt2e(prepared)  # type: ignore[arg-type]
        allow_exported_model_train_eval(out)
        out.eval()  # the patched eval() returns None: do not chain it
        return out


def _observers(prepared: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """``(module name, observer, label, kind)`` per distinct observer, in graph order.

    ``label`` names what the observer watches (the producing module or node, e.g. ``conv1``);
    ``kind`` is ``"weight"`` for observers fed by a ``get_attr`` node (pt2e weights), else
    ``"activation"``.
    """
    out: list[tuple[str, nn.Module, str, str]] = []
    seen: set[int] = set()
    graph = getattr(prepared, "graph", None)
    for node in (graph.nodes if graph is not None else ()):
        if node.op != "call_module" or _OBS not in str(node.target):
            continue
        obs = prepared.get_submodule(str(node.target))
        if id(obs) in seen or not hasattr(obs, "calculate_qparams"):
            continue
        seen.add(id(obs))
        src: Any = node.args[0] if node.args else None
        op = getattr(src, "op", "")
        label = str(src.target) if op in ("call_module", "get_attr") else str(getattr(src, "name", "?"))
        out.append((str(node.target), obs, label, "weight" if op == "get_attr" else "activation"))
    return out
