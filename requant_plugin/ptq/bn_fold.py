"""Fold BatchNorm into the convolution or linear layer that feeds it.

For ``y = BN(conv(x))`` with per-channel ``gamma, beta, mean, var, eps``:
``W' = W * gamma / sqrt(var + eps)`` (per output channel) and
``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; the BN becomes ``nn.Identity``.
"""

from __future__ import annotations

import warnings
from collections import Counter

import torch
import torch.fx
from torch import nn

from .bias_correction import write_guard

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer, bn)`` module-name pairs where the BN is the only consumer of the layer.

    A layer called more than once (a reused module) is never folded, nor a BN that is not always
    fed by such a layer: folding it would change its other calls. A BN applied after several
    layers (each called once, the BN their only consumer) appears once per layer. Found by tracing
    the model with ``torch.fx``; raises ValueError with the reason when the model cannot be traced.
    """
    return _pairs(model)[0]


def _pairs(model: nn.Module) -> tuple[list[tuple[str, str]], list[str]]:
    """The foldable pairs, and one line per BatchNorm left unfolded because a module is reused."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:
        raise ValueError(
            f"fold_bn=True needs a torch.fx-traceable model ({type(exc).__name__}: {exc}); "
            "fold BatchNorm yourself or pass fold_bn=False"
        ) from exc
    mods = dict(gm.named_modules())
    calls = Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_module")
    pairs: dict[str, list[str]] = {}  # bn -> the layer of each of its calls ("" where none folds)
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _BN):
            continue
        src = node.args[0]
        ok = (isinstance(src, torch.fx.Node) and src.op == "call_module"
              and isinstance(mods.get(src.target), _FOLDABLE) and len(src.users) == 1)
        pairs.setdefault(str(node.target), []).append(str(src.target) if ok else "")
    out, refused = [], []
    for bn, layers in pairs.items():
        reused = sorted({x for x in layers if x and calls[x] > 1})
        if reused:
            refused.append(f"{bn!r} (after {', '.join(map(repr, reused))}, called more than once)")
        elif all(layers):
            out += [(layer, bn) for layer in layers]
        elif calls[bn] > 1 and any(layers):
            refused.append(f"{bn!r} (called more than once, not always after a foldable layer)")
    return out, refused


def _own_parameter(module: nn.Module, attr: str, shared: set[int]) -> None:
    """Give ``module.attr`` its own copy when another module holds the same tensor (tied weights):
    folding writes it in place."""
    p = getattr(module, attr)
    if isinstance(p, nn.Parameter) and id(p) in shared:
        setattr(module, attr, nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad))


@torch.no_grad()
def fold_bn_(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every foldable BatchNorm into its producer IN PLACE; returns the folded pairs.

    A folded layer whose weight or bias is tied to another module's gets its own copy first (the
    other keeps the unfolded values); BatchNorms after a reused layer stay (a warning names them)."""
    pairs, refused = _pairs(model)
    if refused:
        warnings.warn("fold_bn: BatchNorm left unfolded, folding would change a reused module's other calls: "
                      + "; ".join(refused), stacklevel=2)
    seen = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    shared = {k for k, c in seen.items() if c > 1}
    for layer_name, bn_name in pairs:
        layer = model.get_submodule(layer_name)
        bn = model.get_submodule(bn_name)
        assert isinstance(bn, _BN) and isinstance(layer, _FOLDABLE)
        if bn.running_var is None or bn.running_mean is None:
            raise ValueError(f"{bn_name}: BatchNorm without running statistics cannot be folded")
        _own_parameter(layer, "weight", shared)
        _own_parameter(layer, "bias", shared)
        inv = torch.rsqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(inv)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(inv)
        factor = gamma * inv
        w = layer.weight
        shape = [-1] + [1] * (w.dim() - 1)
        new_weight = w * factor.reshape(shape)
        with write_guard(layer.weight):
            layer.weight.copy_(new_weight)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (bias - bn.running_mean) * factor + beta
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias.to(w.dtype), requires_grad=w.requires_grad)
        else:
            with write_guard(layer.bias):
                layer.bias.copy_(new_bias)
    for bn_name in dict.fromkeys(bn for _, bn in pairs):  # after every layer read its BN
        parent_name, _, child = bn_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Identity())
    return pairs
