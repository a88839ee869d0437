"""Which weights ``quantize_weights`` touches and how: one :class:`LayerPlan` per weight, resolved
once from the config, its per-layer overrides and the first/last-layer rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..options import PerChannel, Space
from .config import PValue, QuantizeConfig, first_last, layer_space

__all__ = [
    "QUANTIZABLE", "LayerPlan", "all_finite", "attention_weights", "check_model", "layer_weight", "plan_attention",
    "plan_layers", "quantizable_layers", "weight_ch_axis",
]

QUANTIZABLE: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.ConvTranspose3d, nn.Linear,
)


def weight_ch_axis(module: nn.Module) -> int:
    """Output-channel axis of a layer's weight: 1 for ConvTranspose, 0 otherwise."""
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Conv/ConvTranspose/Linear layer, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


def attention_weights(model: nn.Module) -> list[tuple[str, nn.MultiheadAttention, str]]:
    """``(parameter name, module, attribute)`` of the q/k/v projection weights of every
    ``nn.MultiheadAttention`` (the packed ``in_proj_weight`` ``[3E, E]``, or ``q/k/v_proj_weight``
    when ``kdim``/``vdim`` differ): Linear-like weights (output channels on axis 0) that are not
    a submodule's ``weight``. ``out_proj`` is an ``nn.Linear`` and found by :func:`quantizable_layers`."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            attrs = (["in_proj_weight"] if m.in_proj_weight is not None
                     else ["q_proj_weight", "k_proj_weight", "v_proj_weight"])
            out += [(f"{name}.{a}" if name else a, m, a) for a in attrs]
    return out


def layer_weight(module: nn.Module) -> torch.Tensor:
    """``module.weight`` (TypeError if it is not a tensor)."""
    w = module.weight
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.weight is not a tensor")
    return w


@dataclass(frozen=True)
class LayerPlan:
    """How one weight is quantized: the config's settings after its override and the first/last rule.

    Attributes:
        name: layer (or attention parameter) name; ``skip``: leave it float.
        bits, space, symmetric, per_channel, p: the grid of this weight.
        ch_axis: output-channel axis of the weight (1 for ConvTranspose).
        end: the first or last weighted layer (reported as such).
        act_bits: bits of the layer's input in the activation simulation (``None``: float).
    """

    name: str
    bits: int
    space: Space
    symmetric: bool
    per_channel: bool
    p: PValue
    ch_axis: int = 0
    end: bool = False
    skip: bool = False
    act_bits: int | None = None


def _plan(cfg: QuantizeConfig, name: str, ch_axis: int, ends: frozenset[str]) -> LayerPlan:
    ov = cfg.override(name)
    space = layer_space(name, ov.space or cfg.space, ends, transform_first_last=cfg.transform_first_last,
                        space_overridden=ov.space is not None)
    gran = ov.granularity if ov.granularity is not None else cfg.granularity
    end = name in ends
    bits, act_bits = cfg.bits, cfg.act_bits
    if end and cfg.end_bits is not None:  # the first/last layers' own precision, weights and inputs
        bits = cfg.end_bits
        act_bits = None if act_bits is None else cfg.end_bits
    return LayerPlan(
        name=name, bits=ov.bits if ov.bits is not None else bits, space=Space.parse(space),
        symmetric=ov.symmetric if ov.symmetric is not None else cfg.symmetric,
        per_channel=isinstance(gran, PerChannel), p=ov.p if ov.p is not None else cfg.p,
        ch_axis=ch_axis, end=end, skip=ov.skip, act_bits=ov.act_bits if ov.act_bits is not None else act_bits,
    )


def plan_layers(cfg: QuantizeConfig, layers: Sequence[tuple[str, nn.Module]]) -> list[LayerPlan]:
    """One plan per Conv/ConvTranspose/Linear layer of ``layers`` (in order: the first and last
    keep the uniform grid unless ``transform_first_last`` or an override sets their space)."""
    ends = first_last([n for n, _ in layers])
    return [_plan(cfg, n, weight_ch_axis(m), ends) for n, m in layers]


def plan_attention(cfg: QuantizeConfig, model: nn.Module) -> list[LayerPlan]:
    """One plan per MultiheadAttention q/k/v weight (never first/last: not a layer)."""
    return [_plan(cfg, n, 0, frozenset()) for n, _, _ in attention_weights(model)]


def all_finite(w: torch.Tensor) -> bool:
    """True unless ``w`` holds a NaN or an Inf: one reduction (``aminmax`` propagates NaN and
    keeps Inf), no full-size boolean temporary."""
    w = w.detach()
    if w.numel() == 0 or not w.is_floating_point():
        return True
    lo, hi = torch.aminmax(w)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def check_model(model: nn.Module, cfg: QuantizeConfig) -> None:
    """Refuse a model without quantizable weights, overrides naming unknown layers, uninitialised lazy
    layers and NaN/Inf weights."""
    layers = quantizable_layers(model)
    attention = attention_weights(model)
    names = [n for n, _ in layers] + [n for n, _, _ in attention]
    if not names:
        if isinstance(model, torch.jit.ScriptModule):
            raise ValueError(f"{type(model).__name__} is a TorchScript module (torch.jit.script/trace), whose layers "
                             "are compiled code: quantize the nn.Module it was made from, then script the result")
        raise ValueError(f"{type(model).__name__} has no Conv/ConvTranspose/Linear layer to quantize")
    for name in cfg.overrides:
        if name not in names:
            raise ValueError(f"overrides names an unknown layer {name!r}; quantizable layers are: {names}")
    tensors = [(n, layer_weight(m)) for n, m in layers] + [(n, getattr(m, a)) for n, m, a in attention]
    for name, weight in tensors:
        if isinstance(weight, nn.parameter.UninitializedParameter):
            raise ValueError(f"layer {name!r} is a lazy module whose weight is not created yet: run the model once "
                             "on a batch (model(x)) before quantizing it")
        if isinstance(weight, torch.Tensor) and weight.is_meta:
            raise ValueError(f"layer {name!r} has its weight on the meta device (no values yet): materialise the "
                             "model first (model.to_empty(device='cpu') and load_state_dict(...), or "
                             "load_state_dict(..., assign=True))")
        if not all_finite(weight):
            raise ValueError(
                f"layer {name!r} has NaN/Inf weights; fix the checkpoint or skip the layer with "
                f"overrides={{{name!r}: {{'skip': True}}}}"
            )
