"""Residual mean correction: remove the mean shift quantized activations leave on each residual sum.

A residual add ``z = b + s`` whose branch ``b`` ends in a layer or BatchNorm ``L`` (through pass-through modules) reads,
in a W/A integer graph, its shortcut ``s`` quantized: the rounding and clipping of the block input reach the sum
unfiltered, and their mean per channel accumulates block after block (the sequential bias correction of the
layers matches each layer's own output only). With every layer input fake-quantized on the ranges the
calibration simulated, each value read once for all its readers (:meth:`~.stream.GraphStream.share_input_quantization`),

    ``delta_c = E[z_float,c - z_quant,c]``   (mean over the calibration batches and positions)

is added to ``L``'s bias, so the quantized sum's mean per channel equals the float one. The adds are corrected
in graph order in ONE pass over the traced graph (:class:`~.stream.GraphStream`): each add sees the corrections
of the adds before it.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn

from .activation_sim import ActQParams, fake_quant_activations, input_quantizers
from .bias_correction import add_to_bias_
from .stream import GraphStream

__all__ = ["ADD_TARGETS", "correct_residual_means_", "is_tensor_add", "residual_branches"]

#: the call targets of an addition in a ``torch.fx`` graph (and the methods ``add`` / ``add_``)
ADD_TARGETS: tuple[Any, ...] = (operator.add, operator.iadd, torch.add)
#: modules a branch may pass through between its last layer and the add (they leave the channels as they are)
_PASS_THROUGH = (nn.Identity, nn.Dropout)
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: a BatchNorm left unfolded (``fold_bn=False``) ends the branch itself: the shift goes to its ``beta``
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _constant(node: fx.Node) -> bool:
    """A parameter/buffer (``get_attr``) or a value computed from such only."""
    if node.op == "get_attr":
        return True
    if node.op not in ("call_function", "call_method"):
        return False
    args = node.all_input_nodes
    return bool(args) and all(_constant(a) for a in args)


def is_tensor_add(node: fx.Node) -> bool:
    """An addition of two non-constant tensors in a ``torch.fx`` graph (a residual sum; the ONNX Adds the export's
    placement looks at)."""
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    if len(tensors) != 2 or any(_constant(a) for a in tensors):
        return False
    if node.op == "call_function":
        return node.target in ADD_TARGETS
    return node.op == "call_method" and node.target in ("add", "add_")


def residual_branches(graph: fx.Graph, model: nn.Module, layers: Sequence[str]) -> dict[fx.Node, str]:
    """Per residual add of ``graph``, the layer of ``layers`` (with a bias or able to take one), or the affine
    BatchNorm, that ends one of its operands: reached from the operand through pass-through modules only, each value
    on the way read by that path alone (so the module's bias moves this sum and nothing else)."""
    wanted = set(layers)
    out: dict[fx.Node, str] = {}
    for node in graph.nodes:
        if not is_tensor_add(node) or node.kwargs:  # torch.add(a, b, alpha=...) scales one operand
            continue
        for operand in node.args[:2]:
            cur = operand
            while isinstance(cur, fx.Node) and len(cur.users) == 1 and cur.op == "call_module":
                mod = model.get_submodule(str(cur.target))
                if (str(cur.target) in wanted and isinstance(mod, _LAYERS)) or (
                        isinstance(mod, _NORMS) and isinstance(mod.bias, Tensor)):
                    out[node] = str(cur.target)
                    break
                if not isinstance(mod, _PASS_THROUGH) or not cur.args or not isinstance(cur.args[0], fx.Node):
                    break
                cur = cur.args[0]
            if node in out:
                break
    return out


def _channel_axis(module: nn.Module) -> int:
    """The output's channel axis: 1 for a convolution (N, C, ...), the last for a Linear (..., C)."""
    return -1 if isinstance(module, nn.Linear) else 1


def correct_residual_means_(stream: GraphStream, act_qparams: Mapping[str, ActQParams]) -> dict[str, float]:
    """Add ``E[z_float - z_quant]`` per channel to the bias of the module ending each residual branch of
    ``stream.model`` (in place; ``stream``: the calibration's, its float model with BatchNorms folded as in the
    quantized one); returns, per corrected layer or BatchNorm, the mean ``|delta|``.

    ``act_qparams``: each layer input's simulated quantization (``QuantizationReport.act_qparams``)."""
    model = stream.model
    branches = residual_branches(stream.graph, model, list(act_qparams))
    if not branches:
        return {}
    shared = stream.share_input_quantization(input_quantizers(act_qparams))
    shifts: dict[str, float] = {}

    def adjust(node: fx.Node, float_values: list[Any], values: list[Any]) -> list[Any]:
        name = branches.get(node)
        if name is None:
            return values
        module = model.get_submodule(name)
        axis = _channel_axis(module)
        total: Tensor | None = None
        count = 0
        for zf, zq in zip(float_values, values, strict=True):
            diff = (zf.double() - zq.double()).movedim(axis, 0)
            part = diff.reshape(diff.shape[0], -1)
            total = part.sum(1) if total is None else total + part.sum(1)
            count += part.shape[1]
        assert total is not None
        delta = total / max(count, 1)
        weight = getattr(module, "weight", None)
        if not isinstance(weight, Tensor) or delta.numel() != weight.shape[0]:  # a sum broadcasting the branch
            return values
        if not torch.isfinite(delta).all():
            raise ValueError(f"residual_correction: the sum after layer {name!r} is not finite on the calibration "
                             "data; check the model and the data for NaN/Inf")
        add_to_bias_(module, delta.cpu().numpy())
        shifts[name] = float(delta.abs().mean())
        shape = [1] * values[0].dim()
        shape[axis] = -1
        return [v + delta.to(v.dtype).reshape(shape).to(v.device) for v in values]

    with fake_quant_activations(model, {n: qp for n, qp in act_qparams.items() if n not in shared}):
        stream.run(lambda *_: None, adjust)
    return shifts
