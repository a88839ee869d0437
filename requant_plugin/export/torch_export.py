"""FP32 ONNX export of a PyTorch model with BatchNorm folded (TorchScript exporter)."""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import torch
from torch import nn

from ..deps import require
from ..ptq import fold_bn_, quantizable_layers
from ..ptq.reparam import bake_computed_weights
from .attention import explicit_attention_, mha_fastpath_off
from .graph import WEIGHTED_OPS, GraphIndex, scope_name


def export_fp32_onnx(
    model: nn.Module,
    example: torch.Tensor,
    *,
    opset: int = 17,
    input_name: str = "input",
    output_name: str = "output",
) -> tuple[Any, dict[str, str], bool]:
    """Export a float32 deep copy of ``model`` (eval mode, BN folded when fx can trace it) to ONNX.

    Every ``nn.MultiheadAttention`` of the copy is written out as explicit q/k/v/out Linear layers
    (:mod:`.attention`) and PyTorch's fused MHA/Transformer fast path is off while tracing.

    Uses ``torch.onnx.export(dynamo=False)`` (fast, deterministic, initializers keep the
    parameter names) with a dynamic batch axis. Returns ``(ModelProto, names, folded)`` where
    ``names`` maps each weight initializer of a weighted op to its torch layer name and
    ``folded`` tells whether BatchNorm was folded before export.
    """
    onnx = require("onnx", "requant_plugin.export")
    net = export_copy(model)
    with mha_fastpath_off():
        try:
            fold_bn_(net)
            folded = True
        except ValueError:
            folded = False
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), mha_fastpath_off():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            buf,  # type: ignore[arg-type]
            dynamo=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    return proto, layer_names(proto, net), folded


def float32_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with float16/bfloat16/float64 tensors made float32."""
    net = copy.deepcopy(model).eval()
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in [*net.parameters(), *net.buffers()]):
        net = net.float()
    return net


def export_copy(model: nn.Module) -> nn.Module:
    """:func:`float32_copy` with every ``nn.MultiheadAttention`` as an explicit
    :class:`~.attention.ExplicitAttention` (the model the ONNX graph and its reference follow)."""
    net = float32_copy(model)
    explicit_attention_(net)
    bake_computed_weights(quantizable_layers(net), warn=False)  # weight/spectral norm: the inference weight
    return net


def _shape_fits(value: Any, module: nn.Module | None) -> bool:
    w = getattr(module, "weight", None)
    if value is None or not isinstance(w, torch.Tensor):
        return False
    return tuple(value.shape) in (tuple(w.shape), tuple(w.shape)[::-1])


def layer_names(proto: Any, net: nn.Module) -> dict[str, str]:
    """Weight initializer -> torch layer name: by ``<layer>.weight`` names, else by the node's
    module scope (a Linear on 3-D inputs exports a MatMul on a constant-folded ``weight^T``),
    else by order and shape."""
    index = GraphIndex(proto)
    modules = dict(net.named_modules())
    nodes = [
        n
        for n in proto.graph.node
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and index.is_constant(n.input[1])
    ]
    weights = [n.input[1] for n in nodes]
    names: dict[str, str] = {}
    for node, w in zip(nodes, weights, strict=True):
        if w.endswith(".weight") and w[: -len(".weight")] in modules:
            names[w] = w[: -len(".weight")]
        elif w not in names:
            scope = scope_name(node.name)
            if scope and _shape_fits(index.const_value(w), modules.get(scope)):
                names[w] = scope
    missing = [w for w in weights if w not in names]
    if missing:
        layers = [n for n, _ in quantizable_layers(net) if n not in names.values()]
        if len(layers) == len(missing):
            for w, layer in zip(missing, layers, strict=False):
                if _shape_fits(index.const_value(w), modules[layer]):
                    names[w] = layer
    return names
