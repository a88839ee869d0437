"""Cross-layer equalisation before the weight search (issue 18's direction, measured on the development split).

A BatchNorm whose output reaches one convolution only through a ReLU can carry a per-channel factor for free:
``relu(y / s) = relu(y) / s`` for ``s > 0``, so dividing the BatchNorm's affine weight and bias by ``s_i`` and
multiplying the convolution's input channel ``i`` by ``s_i`` leaves the float network unchanged. Weights-only,
per output channel, the BatchNorm stays float, so the factor only changes the convolution's grid:
``s_i = r_i^-b`` with ``r_i = max |W[:, i]|`` (``b = 1``: every input column on the same range, the equalisation
of Nagel et al. 2019 with the producer's side free; ``b = 0``: unchanged). ReLU6, SiLU and residual adds do not
commute with the factor, so on MobileNetV2 and the VGG-SiLU nothing qualifies; on the CIFAR ResNets it is each
block's ``bn1 -> relu -> conv2``.

``python -m benchmarks.dev_split --models resnet20 resnet56 --bits 4 2 --seeds 0 1 --variants recipe cle-0.25
cle-0.5``
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

__all__ = ["equalize", "equalizable_pairs"]

_RELU_FUNCTIONS = (torch.relu, torch.nn.functional.relu)


def _is_relu(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(mods[str(node.target)], nn.ReLU)
    return node.op in ("call_function", "call_method") and (node.target in _RELU_FUNCTIONS or node.target == "relu")


def equalizable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(batchnorm, conv)`` module names where the BatchNorm's output reaches only that (ungrouped) convolution,
    through one ReLU."""
    gm = fx.symbolic_trace(model)
    mods = dict(gm.named_modules())
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods[str(node.target)], nn.BatchNorm2d):
            continue
        users = list(node.users)
        if len(users) != 1 or not _is_relu(users[0], mods):
            continue
        after = list(users[0].users)
        if len(after) != 1 or after[0].op != "call_module":
            continue
        conv = mods[str(after[0].target)]
        if isinstance(conv, nn.Conv2d) and conv.groups == 1 and mods[str(node.target)].affine:
            pairs.append((str(node.target), str(after[0].target)))
    return pairs


@torch.no_grad()
def equalize(model: nn.Module, exponent: float) -> nn.Module:
    """A copy of ``model`` with each :func:`equalizable_pairs` pair rescaled by ``s_i = r_i^-exponent`` (geometric
    mean 1), ``r_i`` the largest magnitude of the convolution's input channel ``i``; the float outputs are
    unchanged up to rounding."""
    out = copy.deepcopy(model)
    for bn_name, conv_name in equalizable_pairs(out):
        bn, conv = out.get_submodule(bn_name), out.get_submodule(conv_name)
        assert isinstance(bn, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d)
        r = conv.weight.abs().amax(dim=(0, 2, 3)).double().clamp_min(1e-12)
        s = r.pow(-exponent)
        s = s / s.log().mean().exp()
        conv.weight.mul_(s.to(conv.weight.dtype)[None, :, None, None])
        bn.weight.div_(s.to(bn.weight.dtype))
        bn.bias.div_(s.to(bn.bias.dtype))
    return out
