"""Fold BatchNorm into the convolution or linear layer that feeds it.

For ``y = BN(conv(x))`` with per-channel ``gamma, beta, mean, var, eps``:
``W' = W * gamma / sqrt(var + eps)`` (per output channel) and
``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; the BN becomes ``nn.Identity``.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from .bias_correction import write_guard

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer, bn)`` module-name pairs where the BN is the only consumer of the layer.

    Found by tracing the model with ``torch.fx``; raises ValueError with the reason when the
    model cannot be traced.
    """
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:
        raise ValueError(
            f"fold_bn=True needs a torch.fx-traceable model ({type(exc).__name__}: {exc}); "
            "fold BatchNorm yourself or pass fold_bn=False"
        ) from exc
    mods = dict(gm.named_modules())
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _BN):
            continue
        src = node.args[0]
        if (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(mods.get(src.target), _FOLDABLE) and len(src.users) == 1):
            pairs.append((str(src.target), str(node.target)))
    return pairs


@torch.no_grad()
def fold_bn_(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every foldable BatchNorm into its producer IN PLACE; returns the folded pairs."""
    pairs = conv_bn_pairs(model)
    for layer_name, bn_name in pairs:
        layer = model.get_submodule(layer_name)
        bn = model.get_submodule(bn_name)
        assert isinstance(bn, _BN) and isinstance(layer, _FOLDABLE)
        if bn.running_var is None or bn.running_mean is None:
            raise ValueError(f"{bn_name}: BatchNorm without running statistics cannot be folded")
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
        parent_name, _, child = bn_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Identity())
    return pairs
