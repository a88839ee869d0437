"""One weight per call in an exported graph, before ``prepare_pt2e``.

``prepare_pt2e`` folds each BatchNorm into the weight of the convolution feeding it, in place on
the graph's parameter. Where several convolution/linear calls read one parameter (a module called
twice, or weights tied between modules), every call's BatchNorm is folded into the same tensor
and the prepared model computes something else (a conv called twice with two BatchNorms: an output
error of the size of the output). :func:`untie_graph_weights` gives each extra call its own copy.
``prepare_fx`` fuses a convolution module with the BatchNorm after it, so a module called twice
with two BatchNorms computes its second call with the first one's; :func:`unshare_reused_layers`
gives each call of such a module its own copy of the module.
"""

from __future__ import annotations

import copy
from operator import attrgetter

import torch
from torch import nn

from ..ptq.bn_fold import _BN

__all__ = ["unshare_reused_layers", "untie_graph_weights"]


def _reads_as_layer(node: torch.fx.Node) -> bool:
    """A convolution or linear call (the ops ``prepare_pt2e`` folds a BatchNorm into)."""
    name = str(node.target)
    return node.op == "call_function" and ("conv" in name or "linear" in name)


def untie_graph_weights(gm: torch.fx.GraphModule) -> int:
    """IN PLACE: every convolution/linear call after the first that reads a parameter (the same
    ``get_attr`` node, or another one holding the same tensor) reads its own copy instead. Values
    are unchanged. Returns the number of copies made. Call it on ``torch.export.export(...).module()``
    before ``prepare_pt2e`` (``requant_plugin``'s pt2e flow does)."""
    by_tensor: dict[int, list[tuple[torch.fx.Node, torch.fx.Node, torch.Tensor]]] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            value = attrgetter(str(node.target))(gm)
            for user in node.users:
                if _reads_as_layer(user):
                    by_tensor.setdefault(id(value), []).append((node, user, value))
    copies = 0
    for uses in by_tensor.values():
        for node, user, value in uses[1:]:
            name = f"{str(node.target).replace('.', '_')}_call{copies}"
            if isinstance(value, nn.Parameter):
                gm.register_parameter(name, nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad))
            else:
                gm.register_buffer(name, value.detach().clone())
            with gm.graph.inserting_before(user):
                fresh = gm.graph.get_attr(name)
            user.replace_input_with(node, fresh)
            copies += 1
    if copies:
        gm.graph.lint()
        gm.recompile()
    return copies


def unshare_reused_layers(model: nn.Module) -> nn.Module:
    """``model`` itself, or, where a module is called more than once and one of its calls feeds a
    BatchNorm, a ``torch.fx`` trace of it in which every call after the first runs its own deep copy
    of that module (``<name>_call<k>``). Same outputs; ``model`` is not modified."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # not traceable here: prepare_fx will say why
        return model
    mods = dict(gm.named_modules())
    calls: dict[str, list[torch.fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)

    def feeds_bn(nodes: list[torch.fx.Node]) -> bool:
        return any(u.op == "call_module" and isinstance(mods.get(str(u.target)), _BN) for n in nodes for u in n.users)

    reused = [t for t, nodes in calls.items() if len(nodes) > 1 and feeds_bn(nodes)]
    if not reused:
        return model
    for target in reused:
        for k, node in enumerate(calls[target][1:], 1):
            name = f"{target.replace('.', '_')}_call{k}"
            gm.add_submodule(name, copy.deepcopy(mods[target]))
            node.target = name
    gm.recompile()
    return gm
