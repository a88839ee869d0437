"""Write a :class:`~.placement.QdqPlan` into an FP32 ONNX graph as QuantizeLinear/DequantizeLinear.

* activation ``t`` -> ``QuantizeLinear(t, s, 0) -> DequantizeLinear(., s, 0)``, one pair per
  tensor, right after its producer; only the consumers the plan names read the DQ output;
* weight ``w`` -> an int8 initializer ``w_quantized`` and ``DequantizeLinear(q, s, 0, axis)``
  (per-channel on the output axis; the float weight is dropped when nothing else reads it);
* zero points are int8 zeros, scales float32 (float16 when requested), all initializers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..deps import require
from .graph import label
from .placement import QdqPlan
from .weights import QuantizedWeight


def _dq_name(tensor: str) -> str:
    return f"{tensor}_DequantizeLinear_Output"


def insert_qdq(
    model: Any,
    plan: QdqPlan,
    act_scales: Mapping[str, float],
    weights: Mapping[str, QuantizedWeight],
    *,
    scale_dtype: type = np.float32,
) -> Any:
    """Return a copy of ``model`` with the plan's Q/DQ nodes.

    Args:
        act_scales: scale per quantized activation tensor (inherited ones included).
        weights: :class:`QuantizedWeight` per weight initializer name.
        scale_dtype: dtype of the scale initializers (float32, or float16 for fp16 graphs).
    """
    onnx = require("onnx", "requant_plugin.export")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    zp_name = "qdq_int8_zero_point"
    inits = [numpy_helper.from_array(np.zeros((), dtype=np.int8), zp_name)]
    head: list[Any] = []
    after: dict[str, list[Any]] = {}

    for t in plan.activations:
        s_name = f"{t}_scale"
        inits.append(numpy_helper.from_array(np.asarray(act_scales[t], dtype=scale_dtype), s_name))
        q = helper.make_node(
            "QuantizeLinear", [t, s_name, zp_name], [f"{t}_QuantizeLinear_Output"], name=f"{t}_QuantizeLinear"
        )
        dq = helper.make_node(
            "DequantizeLinear",
            [f"{t}_QuantizeLinear_Output", s_name, zp_name],
            [_dq_name(t)],
            name=f"{t}_DequantizeLinear",
        )
        after.setdefault(t, []).extend([q, dq])

    for wname, qw in weights.items():
        q_name, s_name, z_name = f"{wname}_quantized", f"{wname}_scale", f"{wname}_zero_point"
        inits.append(numpy_helper.from_array(qw.q.astype(np.int8), q_name))
        inits.append(numpy_helper.from_array(np.asarray(qw.scale, dtype=scale_dtype), s_name))
        inits.append(numpy_helper.from_array(np.zeros(qw.scale.shape, dtype=np.int8), z_name))
        kwargs = {"axis": int(qw.axis)} if qw.axis is not None and qw.scale.ndim == 1 else {}
        head.append(
            helper.make_node(
                "DequantizeLinear",
                [q_name, s_name, z_name],
                [_dq_name(wname)],
                name=f"{wname}_DequantizeLinear",
                **kwargs,
            )
        )

    rewire: dict[str, dict[int, str]] = {}
    for site in plan.weighted:
        slots = rewire.setdefault(site.node, {})
        for k, t in enumerate(site.data_inputs):
            slots[k] = _dq_name(t)
        if site.weight is not None and site.weight in weights:
            slots[1] = _dq_name(site.weight)
    for res in plan.residuals:
        if res.skip_index is not None and res.skip is not None:
            rewire.setdefault(res.node, {})[res.skip_index] = _dq_name(res.skip)

    graph_inputs = {i.name for i in graph.input}
    new_nodes: list[Any] = list(head)
    for t in plan.activations:
        if t in graph_inputs:
            new_nodes.extend(after.pop(t))
    for node in graph.node:
        for k, name in rewire.get(label(node), {}).items():
            node.input[k] = name
        new_nodes.append(node)
        for o in node.output:
            new_nodes.extend(after.pop(o, []))
    if after:
        raise ValueError(f"tensors to quantize have no producer in the graph: {sorted(after)}")

    still_used = {i for n in new_nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name in still_used or t.name not in weights]
    del graph.initializer[:]
    graph.initializer.extend(kept + inits)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return out
