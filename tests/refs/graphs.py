"""Reading a converted pt2e graph: each layer's input quantization and the graph's returned values."""

from __future__ import annotations

import torch

from requant_plugin.observers.layer_inputs import layer_nodes
from requant_plugin.ptq.activation_sim import ActQParams


def layer_input_qparams(q: torch.fx.GraphModule) -> dict[str, ActQParams]:
    """Per layer, the qparams of the dequantize node feeding its input (``alpha`` 1.0: not searched here)."""
    return {name: ActQParams(float(dq.args[1]), int(dq.args[2]), int(dq.args[3]), int(dq.args[4]), 1.0)
            for name, [node] in layer_nodes(q.graph).items() for dq in [node.args[0]]}


def returned(q: torch.fx.GraphModule) -> list[torch.fx.Node]:
    """The nodes the graph returns (a dequantize node where the output is quantized)."""
    return list(q.graph.output_node().all_input_nodes)


def levels(dq: torch.fx.Node) -> int:
    """The number of codes of a (de)quantize_per_tensor node."""
    return int(dq.args[4]) - int(dq.args[3]) + 1
