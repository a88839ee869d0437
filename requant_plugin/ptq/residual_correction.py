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
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn

from .activation_sim import ActQParams, fake_quant_activations
from .bias_correction import add_to_bias_
from .stream import GraphStream

__all__ = ["ADD_TARGETS", "correct_residual_means_", "residual_branches"]

#: the call targets of a residual add of two tensors
ADD_TARGETS: tuple[Any, ...] = (operator.add, operator.iadd, torch.add)
#: modules a branch may pass through between its last layer and the add (they leave the channels as they are)
_PASS_THROUGH = (nn.Identity, nn.Dropout)
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: a BatchNorm left unfolded (``fold_bn=False``) ends the branch itself: the shift goes to its ``beta``
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _is_add(node: fx.Node) -> bool:
    tensors = [a for a in node.args[:2] if isinstance(a, fx.Node)]
    if node.op == "call_method":
        return node.target == "add" and len(node.args) == 2 and len(tensors) == 2 and not node.kwargs
    return node.op == "call_function" and node.target in ADD_TARGETS and len(tensors) == 2 and not node.kwargs


def residual_branches(graph: fx.Graph, model: nn.Module, layers: Sequence[str]) -> dict[fx.Node, str]:
    """Per residual add of ``graph``, the layer of ``layers`` (with a bias or able to take one), or the affine
    BatchNorm, that ends one of its operands: reached from the operand through pass-through modules only, each value
    on the way read by that path alone (so the module's bias moves this sum and nothing else)."""
    wanted = set(layers)
    out: dict[fx.Node, str] = {}
    for node in graph.nodes:
        if not _is_add(node):
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


def correct_residual_means_(float_model: nn.Module, model: nn.Module, act_qparams: Mapping[str, ActQParams],
                            batches: Sequence[Tensor]) -> dict[str, float]:
    """Add ``E[z_float - z_quant]`` per channel to the bias of the module ending each residual branch of ``model``
    (in place; ``float_model``: its float original, BatchNorms folded as in ``model``); returns, per corrected layer
    or BatchNorm, the mean ``|delta|``.

    ``act_qparams``: each layer input's simulated quantization (``QuantizationReport.act_qparams``). Warns and
    corrects nothing where the layers do not stream over the traced graph (see :class:`~.stream.GraphStream`)."""
    stream = GraphStream.build(float_model, model, list(act_qparams), batches)
    if stream is None:
        warnings.warn("residual_correction=True: the model does not stream over its traced graph (it does not trace, "
                      "calls a layer twice, or its activations do not fit in memory), so no residual sum was "
                      "corrected", stacklevel=3)
        return {}
    branches = residual_branches(stream.graph, model, list(act_qparams))
    if not branches:
        return {}
    same: dict[ActQParams, ActQParams] = {}  # one quantizer per distinct range, as RunState.simulate_shortcuts
    shared = stream.share_input_quantization({n: same.setdefault(qp, qp).quantize for n, qp in act_qparams.items()})
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

    stream.adjust = adjust
    with fake_quant_activations(model, {n: qp for n, qp in act_qparams.items() if n not in shared}):
        stream.run(lambda *_: None)
    return shifts
