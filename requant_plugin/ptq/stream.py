"""Layer inputs of the float and the partly quantized model in ONE pass over the traced graph.

``inputs="quantized"`` quantizes layer ``L`` on its inputs in the model whose earlier layers are
already quantized. Re-running both models up to ``L`` for every layer costs ``O(layers x forward)``;
here the graph (``torch.fx.symbolic_trace`` of the float model) is executed node by node over ALL
calibration batches, keeping each value only until its last user ran, so each model runs once:
at a layer's node the caller sees the float and the quantized inputs of every batch, quantizes the
layer, and the node then runs with the new weight. Same values as the per-layer passes (the same
modules and functions on the same batches, in execution order).

Used only where it is exact and fits: the model traces, one required input, each streamed layer is
called by exactly one node (not from inside another leaf module), and the live values of all
batches of both models fit in half the available memory (measured on the first batch).
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx, nn

from .calibration import _contiguous_swap, _eval_forward
from .paired import first_input

__all__ = ["GraphStream", "available_memory"]

#: ``adjust(node, float_values, quantized_values)``: the quantized walk's new values of ``node`` (see ``run``)
Adjust = Callable[[fx.Node, list[Any], list[Any]], list[Any]]
#: Fraction of the available memory the live values of both models may take.
MEMORY_FRACTION = 0.5


def available_memory(device: torch.device) -> int:
    """Free bytes for tensors on ``device``: CUDA's free memory, else Linux ``MemAvailable``
    (2 GiB where neither is known)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 2 << 30


def _nbytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


def _batch_args(node: fx.Node, env: dict[fx.Node, list[Any]], i: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``node``'s positional and keyword arguments for batch ``i`` (each input node's ``i``-th value)."""

    def value(n: fx.Node) -> Any:
        return env[n][i]

    args, kwargs = fx.node.map_arg((node.args, node.kwargs), value)
    return tuple(args), dict(kwargs)


@dataclass
class GraphStream:
    """The traced graph of ``float_model`` run over ``batches`` on it and on ``model`` (same structure),
    calling ``visit(name, float_inputs, quantized_inputs)`` before each streamed layer runs."""

    graph: fx.Graph
    float_model: nn.Module
    model: nn.Module
    layers: dict[str, fx.Node]
    batches: Sequence[Tensor]
    #: values the deployment quantizes once for every reader: the quantized walk replaces them by ``fn(value)``
    node_quant: dict[fx.Node, Callable[[Tensor], Tensor]] = field(default_factory=dict)

    @classmethod
    def build(cls, float_model: nn.Module, model: nn.Module, layers: Sequence[str],
              batches: Sequence[Tensor]) -> GraphStream | None:
        """The stream, or ``None`` where it would not be exact or would not fit in memory (the caller
        then runs the per-layer passes)."""
        try:
            graph = fx.symbolic_trace(float_model).graph
        except Exception:  # any tracing failure means: use the per-layer passes
            return None
        required = [n for n in graph.nodes if n.op == "placeholder" and not n.args]
        calls: dict[str, list[fx.Node]] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                calls.setdefault(str(node.target), []).append(node)
        inside = [t for t in calls for name in layers if name.startswith(f"{t}.")]
        if len(required) != 1 or inside or any(len(calls.get(name, [])) != 1 for name in layers):
            return None
        stream = cls(graph, float_model, model, {name: calls[name][0] for name in layers}, batches)
        try:
            peak = stream._probe()
        except Exception:  # a graph that does not run as traced: per-layer passes
            return None
        first = 1  # the probe runs one sample
        total = sum(int(x.shape[0]) if x.dim() else 1 for x in batches)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        if 2 * peak * total / first > MEMORY_FRACTION * available_memory(device):
            return None
        return stream

    def share_input_quantization(self, quantizers: Mapping[str, Callable[[Tensor], Tensor]]) -> set[str]:
        """Quantize each named layer's input value itself in the quantized walk, so every other reader
        (a residual shortcut) sees it quantized too, as a deployment that quantizes the tensor once; a value
        read by layers with different quantizers (own input widths) is left to them. Returns the layers
        whose input the walk now quantizes (their own input quantization would repeat it)."""
        readers: dict[fx.Node, list[str]] = {}
        for name in quantizers:
            inp = self.layers[name].args[0] if name in self.layers else None
            if isinstance(inp, fx.Node):
                readers.setdefault(inp, []).append(name)
        shared: set[str] = set()
        for node, names in readers.items():
            if len({quantizers[n] for n in names}) == 1:
                self.node_quant[node] = quantizers[names[0]]
                shared.update(names)
        return shared

    def _probe(self) -> int:
        """Run the first sample of the first batch through the float graph; the peak bytes of its live
        values (they grow linearly with the batch: the model runs in eval mode)."""
        x0 = self.batches[0]
        with _eval_forward(self.float_model):
            return max(sum(_nbytes(v) for vals in env.values() for v in vals)
                       for env in self._walk(self.float_model, [x0[:1] if x0.dim() else x0], lambda *_: None))

    def run(self, visit: Callable[[str, list[Tensor], list[Tensor]], None], adjust: Adjust | None = None) -> None:
        """Run every batch through both models, calling ``visit`` at each streamed layer (with the
        quantized model's own tensors in place, so what it writes stays written); ``adjust(node, float_values,
        quantized_values)``, where given, replaces the quantized walk's values of each node by its result."""
        swapped: list[tuple[Tensor, Tensor]] = []

        def restore() -> None:
            for t, orig in swapped:
                t.data = orig
            swapped.clear()

        def unswapped_visit(name: str, xf: list[Tensor], xq: list[Tensor]) -> None:
            restore()
            visit(name, xf, xq)
            swapped.extend(_contiguous_swap(self.model))

        was_training = self.model.training
        self.model.eval()
        try:
            with _eval_forward(self.float_model), torch.no_grad():
                swapped.extend(_contiguous_swap(self.model))
                for _ in self._walk2(unswapped_visit, adjust):
                    pass
        finally:
            restore()
            self.model.train(was_training)

    # -- execution -------------------------------------------------------------------------------

    @functools.cached_property
    def _last_use(self) -> dict[fx.Node, list[fx.Node]]:
        """For each node, the values whose last user it is (freed after it ran)."""
        last: dict[fx.Node, fx.Node] = {}
        for node in self.graph.nodes:
            for inp in node.all_input_nodes:
                last[inp] = node
        out: dict[fx.Node, list[fx.Node]] = {}
        for value, user in last.items():
            out.setdefault(user, []).append(value)
        return out

    def _fetch(self, root: nn.Module, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any],
               x: Tensor) -> Any:
        """The value of ``node`` in ``root`` for one batch (``x``: that batch's input)."""
        if node.op == "placeholder":
            device = next((t.device for t in root.parameters()), torch.device("cpu"))
            dtype = next((t.dtype for t in root.parameters() if t.is_floating_point()), None)
            return x.to(device=device, dtype=dtype if x.is_floating_point() else None)
        if node.op == "get_attr":
            return operator.attrgetter(str(node.target))(root)
        if node.op == "call_module":
            return root.get_submodule(str(node.target))(*args, **kwargs)
        if node.op == "call_method":
            obj, *rest = args
            return getattr(obj, str(node.target))(*rest, **kwargs)
        if node.op == "call_function":
            fn = node.target
            assert callable(fn)
            return fn(*args, **kwargs)
        return None  # output

    def _walk(self, root: nn.Module, batches: Sequence[Tensor],
              visit: Callable[[str, list[Tensor]], None],
              after: Callable[[fx.Node, list[Any]], list[Any]] | None = None) -> Any:
        """Execute the graph on ``root`` for ``batches``; yields the live values (node -> one per batch)
        after each node."""
        env: dict[fx.Node, list[Any]] = {}
        frees = self._last_use
        names = {node: name for name, node in self.layers.items()}
        for node in self.graph.nodes:
            if node.op == "placeholder" and node.args:
                env[node] = [node.args[0]] * len(batches)
                continue
            per_batch = [_batch_args(node, env, i) for i in range(len(batches))]
            if node in names:
                mod = root.get_submodule(str(node.target))
                visit(names[node], [first_input(mod, functools.partial(mod, *a, **k)) for a, k in per_batch])
            env[node] = [self._fetch(root, node, a, k, x) for (a, k), x in zip(per_batch, batches, strict=True)]
            if after is not None:
                env[node] = after(node, env[node])
            for value in frees.get(node, []):
                env.pop(value, None)
            yield env

    def _walk2(self, visit: Callable[[str, list[Tensor], list[Tensor]], None], adjust: Adjust | None = None) -> Any:
        """Both models in lockstep: each node runs on the float model, then on the quantized one
        (after ``visit`` quantized it when it is a streamed layer)."""
        pending: dict[str, list[Tensor]] = {}
        current: dict[fx.Node, list[Any]] = {}  # the float walk's values of the node the quantized walk runs next

        def keep_float(node: fx.Node, values: list[Any]) -> list[Any]:
            current.clear()
            current[node] = values
            return values

        def take_float(name: str, xs: list[Tensor]) -> None:
            pending[name] = xs

        def take_quant(name: str, xs: list[Tensor]) -> None:
            visit(name, pending.pop(name), xs)

        def quantize_shared(node: fx.Node, values: list[Any]) -> list[Any]:
            fn = self.node_quant.get(node)
            values = values if fn is None else [fn(v) for v in values]
            return values if adjust is None else adjust(node, current[node], values)

        walks = zip(self._walk(self.float_model, self.batches, take_float, keep_float if adjust else None),
                    self._walk(self.model, self.batches, take_quant, quantize_shared), strict=True)
        yield from walks
