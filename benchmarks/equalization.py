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

:func:`equalize_activations` turns the factor the other way for the W4A4 integer graph, whose activations are
per tensor: each channel of a ReLU output is scaled by ``s_c = (r_max / r_c)^exponent`` (``r_c``: its 99.9th
percentile, the largest over the calibration batches, each on every 7th value), so every channel spans the shared
4-bit grid, and the reading layer's input channel by ``1 / s_c``: inside each block (``"pairs"``, the pairs
above) and along the residual stream of option-A CIFAR ResNets (``"stream"``: every BatchNorm that writes a
stage's stream and every layer that reads it; the parameter-free shortcut ties a stage's channels to the middle
channels of the next, so each chain of tied channels gets the geometric mean of its stages' factors).

``python -m benchmarks.dev_split --models resnet20 resnet56 --bits 4 --seeds 0 1 --variants pt2e-a4-half-tol02
pt2e-a4-acle pt2e-a4-acle-stream``
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx, nn

from requant_plugin.zoo import BasicBlock

__all__ = ["equalizable_pairs", "equalize", "equalize_activations"]

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


@torch.no_grad()
def _percentiles(model: nn.Module, cal: list[torch.Tensor], groups: dict[str, list[str]],
                 q: float) -> dict[str, torch.Tensor]:
    """Per group of module names: the ``q`` quantile of each channel of the modules' ReLU'd outputs (the largest
    over the group's modules and the calibration batches)."""
    out: dict[str, torch.Tensor] = {}

    def hook(key: str) -> Callable[..., None]:
        def f(_m: nn.Module, _i: Any, o: torch.Tensor) -> None:
            x = o.clamp_min(0).transpose(0, 1).flatten(1)[:, ::7].float()
            r = torch.quantile(x, q, dim=1)
            out[key] = r if key not in out else torch.maximum(out[key], r)
        return f

    hooks = [model.get_submodule(n).register_forward_hook(hook(k)) for k, names in groups.items() for n in names]
    for b in cal:
        model(b)
    for h in hooks:
        h.remove()
    return out


def _factor(r: torch.Tensor, exponent: float) -> torch.Tensor:
    r = r.double()
    return (r.max() / r.clamp_min(1e-3 * float(r.max()))).pow(exponent)


def _scale_out(bn: nn.Module, s: torch.Tensor) -> None:
    assert isinstance(bn, nn.BatchNorm2d)
    bn.weight.mul_(s.to(bn.weight.dtype))
    bn.bias.mul_(s.to(bn.bias.dtype))


def _scale_in(layer: nn.Module, s: torch.Tensor) -> None:
    assert isinstance(layer, nn.Conv2d | nn.Linear)
    shape = (1, -1, 1, 1) if layer.weight.dim() == 4 else (1, -1)
    layer.weight.div_(s.to(layer.weight.dtype).reshape(shape))


@torch.no_grad()
def equalize_activations(model: nn.Module, cal: list[torch.Tensor], parts: Sequence[str] = ("pairs",),
                         exponent: float = 1.0, q: float = 0.999) -> nn.Module:
    """A copy of ``model`` whose ReLU outputs (``parts``: ``"pairs"``, ``"stream"``) are rescaled per channel as
    in the module docstring; the float outputs are unchanged up to rounding."""
    out = copy.deepcopy(model).eval()
    if "pairs" in parts:
        pairs = equalizable_pairs(out)
        r = _percentiles(out, cal, {bn: [bn] for bn, _ in pairs}, q)
        for bn, conv in pairs:
            s = _factor(r[bn], exponent)
            _scale_out(out.get_submodule(bn), s)
            _scale_in(out.get_submodule(conv), s)
    if "stream" in parts:
        _equalize_stream(out, cal, exponent, q)
    return out


def _equalize_stream(net: nn.Module, cal: list[torch.Tensor], exponent: float, q: float) -> None:
    """The residual stream of an option-A CIFAR ResNet (``conv1/bn1/relu``, ``layer1..3`` of blocks with
    ``conv1``, ``bn2``, ``relu2``, ``linear``), rescaled in place."""
    names = dict(net.named_modules())
    stages = [list(names[f"layer{j}"].children()) if f"layer{j}" in names else [] for j in (1, 2, 3)]
    if not all(st and all(isinstance(b, BasicBlock) for b in st) for st in stages):
        raise ValueError("stream equalisation needs a CIFAR ResNet of BasicBlocks (requant_plugin.zoo)")
    groups = {str(j): [f"layer{j + 1}.{k}.relu2" for k in range(len(st))] for j, st in enumerate(stages)}
    groups["0"].append("relu")
    r = _percentiles(net, cal, groups, q)
    d = [_factor(r[str(j)], exponent) for j in range(3)]
    widths = [len(x) for x in d]
    pads = [0] + [(widths[j] - widths[j - 1]) // 2 for j in (1, 2)]
    logs = d[2].log().clone()
    count = torch.ones_like(logs)
    offset = pads[2]
    for j in (1, 0):  # the channels of stage j sit at [offset, offset + width_j) of the last stage
        logs[offset:offset + widths[j]] += d[j].log()
        count[offset:offset + widths[j]] += 1
        offset += pads[j]
    last = (logs / count).exp()
    s, offset = [last, last, last], 0
    for j in (1, 0):
        offset += pads[j + 1]
        s[j] = last[offset:offset + widths[j]]
    _scale_out(net.get_submodule("bn1"), s[0])
    for j, st in enumerate(stages):
        for k, block in enumerate(st):
            assert isinstance(block, BasicBlock)
            _scale_in(block.conv1, s[j - 1] if (k == 0 and j > 0) else s[j])
            _scale_out(block.bn2, s[j])
    _scale_in(net.get_submodule("linear"), s[2])
