"""``convert_fx`` with the lowering traps of torch.ao's int8 kernels handled.

* Transposed convolutions: the ``x86`` engine packs ``ConvTranspose{1,2,3}d`` for oneDNN, whose int8
  result is wrong on some CPUs (an AMD EPYC without VNNI: a conv -> ConvTranspose2d -> conv network
  is off by about its output's own scale, with torch's default qconfig as with ours), while the
  ``fbgemm`` packing computes what the reference graph does on every x86 CPU. A prepared graph with a
  transposed convolution is therefore converted under ``fbgemm`` (the engine is restored after).
* Functional convolutions: ``convert_fx`` lowers ``F.conv2d(x, w, ...)`` only when bias, stride,
  padding, dilation and groups are all passed positionally as lists; otherwise torch fails inside
  its prepack with a bare signature. That failure is re-raised naming the call and the fix.
* ``nn.PReLU``: torch's lowered int8 PReLU is wrong (any engine); :func:`trace_prelu_as_function`
  makes FX see ``F.prelu``, which stays float between the quantized layers.

:func:`prepare_fx_lowerable` and :func:`convert_fx_lowered` are the two ends every FX flow of the
package uses (``observers.flows``, ``refine``, the Lightning callback).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["TracedPReLU", "convert_fx_lowered", "prepare_fx_lowerable", "trace_prelu_as_function",
           "transposed_convs"]

_FUNCTIONAL_CONVS = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)


def transposed_convs(model: nn.Module) -> list[str]:
    """Names of the ``nn.ConvTranspose1d/2d/3d`` modules of ``model``."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvTransposeNd)]


@contextlib.contextmanager
def _engine(name: str) -> Iterator[None]:
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def _functional_convs(prepared: nn.Module) -> list[str]:
    graph = getattr(prepared, "graph", None)
    if graph is None:
        return []
    return [n.name for n in graph.nodes if n.op == "call_function" and n.target in _FUNCTIONAL_CONVS]


def convert_fx_lowered(prepared: nn.Module, **kwargs: Any) -> nn.Module:
    """``convert_fx(prepared, **kwargs)``: under the ``fbgemm`` engine when the current engine is
    ``x86`` and ``prepared`` holds a transposed convolution; a functional convolution that torch
    cannot lower raises a RuntimeError naming the node and the fix."""
    from torch.ao.quantization.quantize_fx import convert_fx

    engine = torch.backends.quantized.engine
    calls = _functional_convs(prepared)  # before converting: convert_fx rewrites the graph in place
    use = "fbgemm" if engine == "x86" and transposed_convs(prepared) else engine
    try:
        with _engine(use):
            return convert_fx(prepared, **kwargs)  # type: ignore[arg-type]
    except RuntimeError as exc:
        if "prepack" not in str(exc) or not calls:
            raise
        raise RuntimeError(
            f"convert_fx ({engine}): torch cannot lower the functional convolution(s) {calls}: it needs every "
            "argument positionally, with lists, as in F.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1) "
            f"(torch: {str(exc).splitlines()[0]}). Fix: write the call that way, hold the weight in an "
            "nn.Conv2d module, or use the pt2e flow (quantize_pt2e), which takes functional convolutions"
        ) from exc


class TracedPReLU(nn.PReLU):
    """``nn.PReLU`` that ``torch.fx`` traces into ``F.prelu(x, weight)`` (not a leaf module): FX
    then keeps it in float between quantized layers, as torch does for ``F.prelu``, instead of
    lowering it to torch's int8 PReLU, which scales the positive side wrongly (with torch's default
    mapping too)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.prelu(input, self.weight)


def trace_prelu_as_function(model: nn.Module) -> nn.Module:
    """Turn every ``nn.PReLU`` of ``model`` into a :class:`TracedPReLU` in place (same parameter,
    same state_dict keys) and return ``model``; call it on a copy before ``prepare_fx``."""
    for module in model.modules():
        if type(module) is nn.PReLU:
            module.__class__ = TracedPReLU
    return model


def prepare_fx_lowerable(model: nn.Module, qconfig_mapping: Any, example: tuple[Any, ...]) -> torch.fx.GraphModule:
    """``prepare_fx`` of ``model`` (a private copy: its ``nn.PReLU`` modules become
    :class:`TracedPReLU`, see :func:`trace_prelu_as_function`)."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    return prepare_fx(trace_prelu_as_function(model), qconfig_mapping, example)
