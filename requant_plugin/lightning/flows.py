"""Quantization flows of the callback: FX and pt2e prepare/convert with their default REQuant
mapping/quantizer, finding the observers of a prepared model, and rebuilding a converted model
from stored observer buffers (no data)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..deps import require
from .config import CalibrationConfig

__all__ = [
    "OBS", "QUANTIZE_WARNING", "FXFlow", "Flow", "PT2EFlow", "fx_weight_observers", "make_flow",
    "observer_source", "observers", "quiet_torch_ao", "rebuild",
]

OBS = "activation_post_process"
_FX_DEPRECATION = "torch.ao.quantization is deprecated"
QUANTIZE_WARNING = "torch.quantize_per_tensor, torch.quantize_per_channel"
_REDUCE_RANGE = "Please use quant_min and quant_max"


@contextlib.contextmanager
def quiet_torch_ao() -> Iterator[None]:
    """Silence torch.ao's own noise during prepare/convert: the stale FX deprecation notice,
    the ``reduce_range`` notice of torch's default qconfigs and the quantized-tensor warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FX_DEPRECATION, category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=_REDUCE_RANGE, category=UserWarning)
        warnings.filterwarnings("ignore", message=QUANTIZE_WARNING, category=UserWarning)
        yield


class FXFlow:
    """torch.ao FX: ``prepare_fx`` -> calibrate -> ``convert_fx``."""

    name = "fx"

    def __init__(self, qconfig_mapping: Any) -> None:
        self.qconfig_mapping = qconfig_mapping

    def prepare(self, model: nn.Module, example: tuple[Any, ...]) -> nn.Module:
        from ..observers.lowering import prepare_fx_lowerable

        with quiet_torch_ao():  # model: a private copy
            return prepare_fx_lowerable(model, self.qconfig_mapping, example)

    def convert(self, prepared: nn.Module) -> nn.Module:
        """``convert_fx`` (lowered x86 kernels); sub-7-bit ranges get the decomposed reference.

        The lowered kernels clamp to the 8-bit container, ignoring ``quant_min``/``quant_max``
        below 7 bits; torch's decomposed reference graph honours them (float q/dq ops).
        """
        from torch.ao.quantization import quantize_fx

        from ..observers.lowering import convert_fx_lowered

        narrow = [r for r in _fx_ranges(prepared) if r[1] - r[0] + 1 < 128]
        with quiet_torch_ao():
            decomposed = quantize_fx._convert_to_reference_decomposed_fx
            out = decomposed(prepared) if narrow else convert_fx_lowered(prepared)  # type: ignore[arg-type]
        out.eval()
        return out


def _fx_ranges(prepared: nn.Module) -> list[tuple[int, int]]:
    """``(quant_min, quant_max)`` of every activation observer and weight qconfig of a prepared model."""
    obs: list[Any] = [o for _, o, _, _ in observers(prepared)]
    obs += [wobs for _, _, wobs in fx_weight_observers(prepared)]
    return [(int(o.quant_min), int(o.quant_max)) for o in obs if hasattr(o, "quant_min")]


def fx_weight_observers(prepared: nn.Module) -> list[tuple[str, Tensor, nn.Module]]:
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
        if not isinstance(w, Tensor) or qconfig is None or OBS in name or qconfig.weight is None:
            continue
        parent, _, leaf = name.rpartition(".")
        label = parent if leaf == "0" and isinstance(mods.get(parent), _FusedModule) else name
        wobs = qconfig.weight()
        if hasattr(wobs, "quant_min") and hasattr(wobs, "calculate_qparams"):
            out.append((label, w.detach().to("cpu"), wobs))
    return out


class PT2EFlow:
    """torchao pt2e: ``torch.export`` (dynamic batch) -> ``prepare_pt2e`` -> ``convert_pt2e``."""

    name = "pt2e"

    def __init__(self, quantizer: Any) -> None:
        self.quantizer = quantizer

    def prepare(self, model: nn.Module, example: tuple[Any, ...]) -> nn.Module:
        prepare_pt2e = require("torchao.quantization.pt2e.quantize_pt2e", _PT2E).prepare_pt2e
        dims = tuple({0: torch.export.Dim("batch", min=1)} if isinstance(a, Tensor) and a.dim() > 0
                     else None for a in example)
        try:
            exported = torch.export.export(model, example, dynamic_shapes=dims)
        except Exception as exc:
            raise RuntimeError(
                f"torch.export failed on {type(model).__name__} ({type(exc).__name__}: {exc}); "
                "make the submodule exportable with a dynamic batch dimension or use mode='fx'"
            ) from exc
        return prepare_pt2e(exported.module(), self.quantizer)  # type: ignore[no-any-return]

    def convert(self, prepared: nn.Module) -> nn.Module:
        pt2e = require("torchao.quantization.pt2e", _PT2E)
        convert_pt2e = require("torchao.quantization.pt2e.quantize_pt2e", _PT2E).convert_pt2e
        with quiet_torch_ao():
            out = convert_pt2e(prepared)
        pt2e.allow_exported_model_train_eval(out)
        out.eval()  # the patched eval() returns None: do not chain it
        return out


def observers(prepared: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """``(module name, observer, label, kind)`` per distinct observer, in graph order.

    ``label`` names what the observer watches (the producing module or node, e.g. ``conv1``);
    ``kind`` is ``"weight"`` for observers fed by a ``get_attr`` node (pt2e weights), else
    ``"activation"``.
    """
    out: list[tuple[str, nn.Module, str, str]] = []
    seen: set[int] = set()
    graph = getattr(prepared, "graph", None)
    for node in (graph.nodes if graph is not None else ()):
        if node.op != "call_module" or OBS not in str(node.target):
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


Flow = FXFlow | PT2EFlow
_PT2E = "REQuantCalibration(mode='pt2e')"


def make_flow(config: CalibrationConfig) -> Flow | None:
    """The FX/pt2e flow of ``config`` (``None`` in ``"weights"`` mode).

    FX: ``config.qconfig_mapping``, else :func:`requant_plugin.qconfig.get_requant_qconfig_mapping`
    (x86). pt2e: ``config.quantizer``, else :func:`requant_plugin.pt2e.get_requant_quantizer`.
    """
    if config.mode == "fx":
        mapping = config.qconfig_mapping
        if mapping is None:
            from ..qconfig import get_requant_qconfig_mapping

            mapping = get_requant_qconfig_mapping(weight_bits=config.weight_bits,
                                                  act_bits=config.act_bits, backend="x86")
        return FXFlow(mapping)
    if config.mode == "pt2e":
        require("torchao.quantization.pt2e.quantize_pt2e", _PT2E)
        quantizer = config.quantizer
        if quantizer is None:
            from ..pt2e import get_requant_quantizer

            quantizer = get_requant_quantizer(weight_bits=config.weight_bits, act_bits=config.act_bits)
        return PT2EFlow(quantizer)
    return None


def observer_source(config: CalibrationConfig) -> str:
    """Where the observers come from, as recorded in the state: ``"default"`` (weights mode),
    ``"custom"`` (a given mapping/quantizer) or ``"requant"`` (REQuant's default)."""
    if config.mode == "fx":
        return "custom" if config.qconfig_mapping is not None else "requant"
    if config.mode == "pt2e":
        return "custom" if config.quantizer is not None else "requant"
    return "default"


def rebuild(flow: Flow, source: nn.Module, example: tuple[Any, ...], state: dict[str, Tensor]
            ) -> nn.Module:
    """Converted model of ``source`` (a plain float copy) from stored observer buffers, no data:
    ``prepare`` on ``example``, load the ``activation_post_process`` buffers, ``convert``."""
    with torch.inference_mode(False), torch.no_grad():
        prepared = flow.prepare(source, example)
        result = prepared.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if OBS in k]
        if missing or result.unexpected_keys:
            raise RuntimeError(
                "the stored REQuantCalibration observer state does not fit this model/qconfig "
                f"(missing {missing[:4]}, unexpected {list(result.unexpected_keys)[:4]}); construct "
                "the callback with the settings used for calibration, or recalibrate"
            )
        return flow.convert(prepared)
