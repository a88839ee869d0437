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
from .graph import WEIGHTED_OPS, GraphIndex


def export_fp32_onnx(
    model: nn.Module,
    example: torch.Tensor,
    *,
    opset: int = 17,
    input_name: str = "input",
    output_name: str = "output",
) -> tuple[Any, dict[str, str], bool]:
    """Export a float32 deep copy of ``model`` (eval mode, BN folded when fx can trace it) to ONNX.

    Uses ``torch.onnx.export(dynamo=False)`` (fast, deterministic, initializers keep the
    parameter names) with a dynamic batch axis. Returns ``(ModelProto, names, folded)`` where
    ``names`` maps each weight initializer of a weighted op to its torch layer name and
    ``folded`` tells whether BatchNorm was folded before export.
    """
    onnx = require("onnx", "requant_plugin.export")
    net = float32_copy(model)
    try:
        fold_bn_(net)
        folded = True
    except ValueError:
        folded = False
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
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


def layer_names(proto: Any, net: nn.Module) -> dict[str, str]:
    """Weight initializer -> torch layer name: by ``<layer>.weight`` names, else by order and shape."""
    index = GraphIndex(proto)
    modules = dict(net.named_modules())
    weights = [
        n.input[1]
        for n in proto.graph.node
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and index.is_constant(n.input[1])
    ]
    names: dict[str, str] = {}
    for w in weights:
        if w.endswith(".weight") and w[: -len(".weight")] in modules:
            names[w] = w[: -len(".weight")]
    missing = [w for w in weights if w not in names]
    if missing:
        layers = [n for n, _ in quantizable_layers(net) if n not in names.values()]
        if len(layers) == len(missing):
            for w, layer in zip(missing, layers, strict=False):
                value = index.const_value(w)
                shape = tuple(modules[layer].weight.shape)  # type: ignore[union-attr]
                if value is not None and (value.shape == shape or value.shape == shape[::-1]):
                    names[w] = layer
    return names
