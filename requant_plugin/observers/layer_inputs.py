"""Per-layer input precision in a pt2e graph: chosen layers read activations at their own bit width.

A quantizer annotates every activation at one bit width. :func:`set_input_bits` makes a quantizer
give the input of each named Conv/Linear layer its own observer at ``bits`` (e.g. 8 for the first
and last layers at W4A4, the convention of the BRECQ, QDrop and PD-Quant tables). The input of a
layer is the edge into it plus the chain of shape and pooling ops just before it (``flatten``,
``view``, average/max pooling, ``mean``...): in ``relu -> avgpool -> flatten -> linear`` the
average pool and flatten outputs are re-quantized at ``bits``. With ``pooled=b`` every other layer
whose input passes through an averaging op (:data:`AVERAGING_OPS`) gets such an observer at ``b``
too: the backends' quantizers give a pool's output the qparams of its input, which at 4 bits leaves
the pooled features a few of the 16 levels (the weight calibration's ``act_bits`` simulation
quantizes them on their own range). An averaging op in such a chain reads its producer's float
output where nothing else reads it (:func:`_float_pool_input`): the pooled features are quantized
once, on their own range, as the simulation does. With ``residual=b`` each quantized operand of a
residual add (:data:`ADD_OPS` of two tensors: the shortcut into a fused conv+add) gets its own
observer at ``b``: the residual stream bypasses the layers, so its quantization error reaches the
output uncompensated. With ``pinned`` each named layer's input observer (and every key sharing it)
is replaced by the one its factory makes, e.g. one holding the range the weights were calibrated
against. With ``output=b`` an observed value only the graph output reads (xnnpack quantizes a Linear's
output: the logits) is quantized at ``b`` bits instead (16 levels of logits would tie classes). It works
through the quantizer's ``prepare_obs_or_fq_callback``, which torchao's ``prepare_pt2e`` calls after creating
the observers and before inserting them, so calibration, refinement and ``convert_pt2e`` see the new observers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["ADD_OPS", "AVERAGING_OPS", "LAYER_OPS", "PASS_THROUGH_OPS", "layer_nodes", "pooled_layers",
           "residual_edges", "set_input_bits"]

#: aten ops of the weighted layers, by their ``str(node.target)``
LAYER_OPS = frozenset({
    "aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default", "aten.conv_transpose1d.default",
    "aten.conv_transpose2d.input", "aten.conv_transpose3d.input", "aten.linear.default",
})
#: ops between an activation and the layer that reads it which keep or average its values
PASS_THROUGH_OPS = frozenset({
    "aten.flatten.using_ints", "aten.view.default", "aten.reshape.default", "aten.squeeze.dim",
    "aten.unsqueeze.default", "aten.clone.default", "aten.contiguous.default", "aten.dropout.default",
    "aten.adaptive_avg_pool2d.default", "aten.avg_pool2d.default", "aten.max_pool2d.default",
    "aten.mean.dim",
})
#: the pass-through ops that average (a finer grid than their input's: it deserves its own range)
AVERAGING_OPS = frozenset({"aten.adaptive_avg_pool2d.default", "aten.avg_pool2d.default", "aten.mean.dim"})
#: elementwise additions; one of two tensors is a residual add
ADD_OPS = frozenset({"aten.add.Tensor", "aten.add_.Tensor"})

ObserverFactory = Callable[[int], nn.Module]


def layer_nodes(graph: torch.fx.Graph) -> dict[str, list[torch.fx.Node]]:
    """The Conv/Linear call nodes of an exported graph by the name of the module that made them
    (the innermost entry of ``nn_module_stack``; a module called twice has two nodes)."""
    out: dict[str, list[torch.fx.Node]] = {}
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and str(node.target) in LAYER_OPS and stack:
            name = str(list(stack.values())[-1][0])
            out.setdefault(name, []).append(node)
    return out


def _input_chain(layer: torch.fx.Node) -> list[torch.fx.Node]:
    """``[layer, p1, ..., pk]``: the layer node and the pass-through ops feeding it, nearest first."""
    chain = [layer]
    src = layer.args[0] if layer.args else None
    while isinstance(src, torch.fx.Node) and src.op == "call_function" and str(src.target) in PASS_THROUGH_OPS:
        chain.append(src)
        src = src.args[0] if src.args else None
    return chain


def _input_keys(layer: torch.fx.Node) -> list[Any]:
    """The observer map keys of a layer's input: the edge into it, and the outputs of and edges
    between its pass-through ops (not the edge from the op that produced the activation)."""
    chain = _input_chain(layer)
    keys: list[Any] = []
    for user, arg in itertools.pairwise(chain):
        keys += [(arg, user), arg]
    if len(chain) == 1 and isinstance(layer.args[0], torch.fx.Node):
        keys.append((layer.args[0], layer))
    return keys


def pooled_layers(nodes: Mapping[str, list[torch.fx.Node]]) -> list[str]:
    """The layers of ``nodes`` (:func:`layer_nodes`) whose input chain passes through an averaging op."""
    return [name for name, calls in nodes.items()
            if any(str(op.target) in AVERAGING_OPS for layer in calls for op in _input_chain(layer)[1:])]


def residual_edges(graph: torch.fx.Graph) -> list[tuple[torch.fx.Node, torch.fx.Node]]:
    """``(operand, add)`` for each tensor operand of each add of two tensors in ``graph``."""
    return [(arg, node) for node in graph.nodes if node.op == "call_function" and str(node.target) in ADD_OPS
            and len(node.args) >= 2 and all(isinstance(a, torch.fx.Node) for a in node.args[:2])
            for arg in node.args[:2]]


def _own_observers(obs_map: dict[Any, nn.Module], keys: list[Any], bits: int, make_observer: ObserverFactory) -> None:
    """Replace the observer of each of ``keys`` found in ``obs_map`` with one from ``make_observer(bits)``,
    one new observer per old one (shared observers stay shared). An edge's source loses its output
    observer where every reader observes its own edge: prepare then inserts each edge's observer on the
    float output (else the new edge observer would re-quantize the output observer's values, e.g.
    xnnpack's observed ReLU outputs)."""
    new: dict[int, nn.Module] = {}
    for key in keys:
        if key in obs_map:
            obs_map[key] = new.setdefault(id(obs_map[key]), make_observer(bits))
            if isinstance(key, tuple) and key[0] in obs_map and all((key[0], u) in obs_map for u in key[0].users):
                del obs_map[key[0]]


def _float_pool_input(obs_map: dict[Any, nn.Module], layer: torch.fx.Node) -> None:
    """Drop the observers before the farthest averaging op of ``layer``'s input chain (its input edge and
    its producer's output) when that op is the producer's only reader: the layer's own observers after the
    pool quantize the averaged features, and ``pool(q(x))`` would add the producer-width error first."""
    chain = _input_chain(layer)
    pools = [op for op in chain[1:] if str(op.target) in AVERAGING_OPS]
    if not pools:
        return
    src = pools[-1].args[0]
    if isinstance(src, torch.fx.Node) and set(src.users) == {pools[-1]}:
        obs_map.pop((src, pools[-1]), None)
        obs_map.pop(src, None)


def _pin(obs_map: dict[Any, nn.Module], keys: list[Any], make: Callable[[], nn.Module]) -> None:
    """Replace the observers of ``keys`` with one from ``make()``, at every key that shares them."""
    old = {id(obs_map[k]) for k in keys if k in obs_map}
    if old:
        new = make()
        for k in [k for k, obs in obs_map.items() if id(obs) in old]:
            obs_map[k] = new


def set_input_bits(quantizer: Any, bits: Mapping[str, int], make_observer: ObserverFactory, *,
                   pooled: int | None = None, residual: int | None = None,
                   pinned: Mapping[str, Callable[[], nn.Module]] | None = None, output: int | None = None) -> Any:
    """Give the input of each layer named in ``bits`` an observer from ``make_observer(bits)``, with
    ``pooled`` each other layer of :func:`pooled_layers` one from ``make_observer(pooled)``, with
    ``residual`` each observed edge of :func:`residual_edges` one from ``make_observer(residual)``, and
    then the input of each layer named in ``pinned`` (and whatever shares its observer) the observer its
    factory makes, except a pooled layer whose input observer is the pool input's (shared pooling qparams),
    and with ``output`` each observed value only the graph output reads (and whatever shares its observer)
    one from ``make_observer(output)``; returns ``quantizer`` (changed in place: its ``prepare_obs_or_fq_callback``).

    Raises ValueError at ``prepare_pt2e`` when a name matches no Conv/Linear call of the graph
    (the names are module names of the model being prepared, e.g. ``"conv1"``, ``"fc"``).
    """
    named = {str(k): int(v) for k, v in bits.items()}
    before = quantizer.prepare_obs_or_fq_callback

    def callback(model: torch.fx.GraphModule, obs_map: dict[Any, nn.Module]) -> None:
        before(model, obs_map)
        nodes = layer_nodes(model.graph)
        missing = sorted((set(named) | set(pinned or {})) - set(nodes))
        if missing:
            raise ValueError(f"input bits name layers {missing} that are not Conv/Linear calls of the exported "
                             f"graph; its layers are: {sorted(nodes)}")
        wanted = dict(named)
        if pooled is not None:
            wanted.update({name: pooled for name in pooled_layers(nodes) if name not in named})
        for name, b in wanted.items():
            _own_observers(obs_map, [key for layer in nodes[name] for key in _input_keys(layer)], b, make_observer)
            for layer in nodes[name]:
                _float_pool_input(obs_map, layer)
        if residual is not None:
            _own_observers(obs_map, residual_edges(model.graph), residual, make_observer)
        shared_pool = set(pooled_layers(nodes)) - set(wanted)
        for name, make in (pinned or {}).items():
            if name not in shared_pool:
                _pin(obs_map, [key for layer in nodes[name] for key in _input_keys(layer)], make)
        if output is not None:  # only values nothing but the output reads: a layer input keeps its own width
            for node in next(n for n in model.graph.nodes if n.op == "output").all_input_nodes:
                if all(u.op == "output" for u in node.users):
                    _pin(obs_map, [node], lambda: make_observer(output))

    quantizer.prepare_obs_or_fq_callback = callback
    return quantizer
