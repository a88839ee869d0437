"""Lightning-free logic of the ``REQuantCalibration`` callback (PTQ through one callback).

This module never imports ``lightning`` or ``pytorch_lightning``: :class:`REQuantCalibrationCore`
only uses the hook names and duck-typed ``trainer`` attributes that both flavours share, and
``requant_plugin.lightning`` / ``requant_plugin.pytorch_lightning`` each add one thin subclass
that mixes in their own ``Callback`` base.

What the callback does, and what it never does:

* It quantizes a COPY of one float submodule of the LightningModule (``attr``, e.g. ``"model"``)
  and keeps the quantized module on the callback. ``pl_module`` is never converted, its
  ``forward`` is never replaced, checkpoints stay float and load into a plain module.
* Modes: ``"weights"`` (weights-only REQuant via :func:`requant_plugin.quantize_weights`, no
  data) and ``"fx"`` / ``"pt2e"`` (full PTQ: ``prepare_fx`` or ``torch.export`` +
  ``prepare_pt2e``, ``num_batches`` calibration batches through the observers, then
  ``convert_fx`` / ``convert_pt2e``).
* Triggers: ``on_fit_end`` (after ``trainer.fit``), ``on_test_start`` (the quantized module is
  swapped in for ``trainer.test`` and the float one is put back in ``on_test_end``; the callback
  also logs ``requant/fp32_acc``, ``requant/quant_acc``, ``requant/top1_agreement`` and
  ``requant/sqnr_db`` computed on the same test batches, so FP32 and quantized figures come out
  side by side) and an explicit :meth:`REQuantCalibrationCore.calibrate`.
* State: ``state_dict()`` holds only tensors, ints, floats, strings, lists and dicts (safe for
  ``torch.load(weights_only=True)``): the observer buffers (``activation_post_process_*``), the
  settings, the example-input shapes, the per-layer summary and a SHA-256 fingerprint of the
  float weights it was computed from. In a fresh process, ``load_state_dict`` plus the float
  weights restored from the same checkpoint rebuild the quantized module without data
  (``prepare`` again, load the observer buffers, ``convert``).
* Distributed (``strategy="ddp"``): after the local calibration every rank all-gathers the
  per-rank observer states and merges them in rank order, so all ranks end with identical
  ranges: REQuant activation observers merge their streaming histograms (exact counts,
  :meth:`requant_plugin.core.StreamingHistogram.merge`), min/max observers take the
  elementwise min/max (exact), ``HistogramObserver`` re-bins every rank's histogram onto the
  union range (mass-conserving linear split), observers with a ``merge(other)`` method merge
  themselves, weight observers keep rank 0's state (DDP keeps weights identical); anything
  else falls back to rank 0's statistics (with a warning).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "MODES", "QuantizedModule", "REQuantCalibrationCore", "default_input_fn", "default_target_fn",
    "format_summary", "weights_fingerprint",
]

log = logging.getLogger("requant_plugin.lightning")

MODES = ("weights", "fx", "pt2e")
STATE_VERSION = 1
_OBS = "activation_post_process"
_SAMPLE_CAP = 1 << 16
_FX_DEPRECATION = "torch.ao.quantization is deprecated"
_QUANTIZE_WARNING = "torch.quantize_per_tensor, torch.quantize_per_channel"
_REDUCE_RANGE = "Please use quant_min and quant_max"
_NONDETERMINISTIC = ".*does not have a deterministic implementation"
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric,
                torch.per_channel_affine_float_qparams)
_SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
_UNSUPPORTED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")
_SUPPORTED_STRATEGIES = ("SingleDeviceStrategy", "DDPStrategy")


# --------------------------------------------------------------------------- batches


def default_input_fn(batch: Any) -> Any:
    """The model input of a batch: ``batch[0]`` for a tuple/list, the batch itself for a tensor."""
    if isinstance(batch, (list, tuple)) and batch:
        return batch[0]
    if isinstance(batch, Tensor):
        return batch
    raise TypeError(
        f"cannot find the model input in a batch of type {type(batch).__name__}; pass "
        "REQuantCalibration(input_fn=lambda batch: ...) returning the tensor(s) the submodule takes"
    )


def default_target_fn(batch: Any) -> Tensor | None:
    """Class labels of a batch when it is ``(inputs, int64 labels[N], ...)``, else ``None``."""
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        y = batch[1]
        if isinstance(y, Tensor) and y.dim() == 1 and not y.is_floating_point():
            return y
    return None


def _as_args(inputs: Any) -> tuple[Any, ...]:
    return tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        moved = [_to_device(o, device) for o in obj]
        return type(obj)(moved) if isinstance(obj, list) else tuple(moved)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _detach_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, (list, tuple)):
        return tuple(_detach_cpu(o) for o in obj)
    return obj


def _first_tensor(obj: Any) -> Tensor | None:
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    if isinstance(obj, dict):
        for o in obj.values():
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def _first_loader(loaders: Any) -> Any:
    """The first dataloader of what Lightning stores (a loader, a list/tuple or a dict of them)."""
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    return loaders


# --------------------------------------------------------------------------- modules


def weights_fingerprint(module: nn.Module | Mapping[str, Any]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a module's ``state_dict()`` (or of a
    state dict given directly).

    Equal fingerprints mean bit-identical float weights (the calibration state is valid for
    them); a checkpoint round trip preserves it exactly.
    """
    state = module.state_dict() if isinstance(module, nn.Module) else module
    h = hashlib.sha256()
    for name, t in state.items():
        if not isinstance(t, Tensor):
            continue
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _plain_copy(module: nn.Module, state: Mapping[str, Tensor] | None = None) -> nn.Module:
    """A CPU, eval-mode deep copy with pruning masks / parametrizations baked into the weights.

    ``state`` (a state dict of ``module``, e.g. rank 0's under DDP) is loaded into the copy
    first. ``torch.nn.utils.prune`` (used by Lightning's ``ModelPruning``) recomputes
    ``weight`` in a forward pre-hook, which would silently undo BN folding in ``prepare_fx``;
    the copy gets plain parameters instead. The original module is not touched.
    """
    from torch.nn.utils import parametrize, prune

    # pruned modules hold ``weight = weight_orig * mask`` as a non-leaf tensor attribute, which
    # deepcopy refuses: hand it detached copies through the memo instead
    memo: dict[int, Any] = {id(v): v.detach().clone() for sub in module.modules()
                            for v in vars(sub).values() if isinstance(v, Tensor) and not v.is_leaf}
    out = copy.deepcopy(module, memo).to("cpu").eval()
    if state is not None:
        out.load_state_dict(state)
    for sub in out.modules():
        for hook in list(sub._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                names = ([h._tensor_name for h in hook._pruning_methods]  # type: ignore[attr-defined]
                         if isinstance(hook, prune.PruningContainer) else [hook._tensor_name])
                for name in dict.fromkeys(names):
                    prune.remove(sub, name)
        if parametrize.is_parametrized(sub):
            for name in list(sub.parametrizations.keys()):  # type: ignore[union-attr,operator]
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def _float_state(module: nn.Module, trainer: Any) -> dict[str, Tensor]:
    """The float weights to quantize: the local ``state_dict`` (CPU copies), or rank 0's under DDP.

    DDP keeps parameters identical but not BatchNorm running statistics (each rank updates
    them on its own shard), so every rank quantizes rank 0's state, which is also what rank 0
    writes to checkpoints. This is a collective call under DDP.
    """
    state = {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}
    if _distributed(trainer):
        box: list[Any] = [state if torch.distributed.get_rank() == 0 else None]
        torch.distributed.broadcast_object_list(box, src=0)
        state = box[0]
    return state


def _module_device(module: nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


class QuantizedModule(nn.Module):
    """Runs a quantized module on ``run_device`` (CPU for FX/pt2e kernels) for any caller device.

    Tensor inputs move to ``run_device`` and outputs move back to the device of the first
    tensor input. ``train()``/``eval()`` only flip this wrapper's flag: the inner module stays
    in eval mode (exported pt2e modules refuse ``.train()``), so Lightning's loops can call them.
    The quantization-warning spam of lowered FX models is silenced inside ``forward``, and under
    ``torch.use_deterministic_algorithms(True)`` (``Trainer(deterministic=True)``) the call runs
    in warn-only mode: the quantized CPU kernels allocate their output with
    ``quantized_resize_cpu_``, which torch flags although it computes nothing.
    """

    def __init__(self, module: nn.Module, run_device: torch.device | str | None = "cpu",
                 remember_last: bool = False) -> None:
        super().__init__()
        self.module = module
        self.run_device = torch.device(run_device) if run_device is not None else None
        self.remember_last = remember_last
        self._last: tuple[tuple[Any, ...], Any] | None = None

    def last_output_for(self, args: tuple[Any, ...]) -> Any:
        """The output of the last call if it had exactly these argument objects, else ``None``.

        With ``remember_last=True`` (the test-time stand-in) the callback's float-vs-quantized
        comparison reuses the quantized output of ``test_step`` instead of running it twice.
        """
        if self._last is None or len(self._last[0]) != len(args):
            return None
        return self._last[1] if all(a is b for a, b in zip(self._last[0], args, strict=True)) else None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``module(*args, **kwargs)`` on ``run_device``, outputs on the input's device."""
        out = self._run(args, kwargs)
        if self.remember_last:
            self._last = (args, out) if not kwargs else None
        return out

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        first = _first_tensor((args, kwargs))
        if self.run_device is not None:
            args, kwargs = _to_device(args, self.run_device), _to_device(kwargs, self.run_device)
        strict = (torch.are_deterministic_algorithms_enabled()
                  and not torch.is_deterministic_algorithms_warn_only_enabled())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_QUANTIZE_WARNING, category=UserWarning)
            warnings.filterwarnings("ignore", message=_NONDETERMINISTIC, category=UserWarning)
            if strict:  # quantized kernels allocate with quantized_resize_cpu_, flagged by torch
                torch.use_deterministic_algorithms(True, warn_only=True)
            try:
                out = self.module(*args, **kwargs)
            finally:
                if strict:
                    torch.use_deterministic_algorithms(True)
        if self.run_device is not None and first is not None and first.device != self.run_device:
            out = _to_device(out, first.device)
        return out

    def train(self, mode: bool = True) -> QuantizedModule:
        """Set this wrapper's ``training`` flag only; the quantized module stays in eval mode."""
        self.training = mode
        return self


# --------------------------------------------------------------------------- flows


@contextlib.contextmanager
def _quiet_torch_ao() -> Iterator[None]:
    """Silence torch.ao's own noise during prepare/convert: the stale FX deprecation notice,
    the ``reduce_range`` notice of torch's default qconfigs and the quantized-tensor warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FX_DEPRECATION, category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=_REDUCE_RANGE, category=UserWarning)
        warnings.filterwarnings("ignore", message=_QUANTIZE_WARNING, category=UserWarning)
        yield


class _FXFlow:
    """torch.ao FX: ``prepare_fx`` -> calibrate -> ``convert_fx``."""

    name = "fx"

    def __init__(self, qconfig_mapping: Any) -> None:
        self.qconfig_mapping = qconfig_mapping

    def prepare(self, model: nn.Module, example: tuple[Any, ...]) -> nn.Module:
        from torch.ao.quantization.quantize_fx import prepare_fx

        with _quiet_torch_ao():
            return prepare_fx(model, self.qconfig_mapping, example)

    def convert(self, prepared: nn.Module) -> nn.Module:
        """``convert_fx`` (lowered x86 kernels); sub-7-bit ranges get the decomposed reference.

        The lowered kernels clamp to the 8-bit container, ignoring ``quant_min``/``quant_max``
        below 7 bits; torch's decomposed reference graph honours them (float q/dq ops).
        """
        from torch.ao.quantization import quantize_fx

        narrow = [r for r in _fx_ranges(prepared) if r[1] - r[0] + 1 < 128]
        with _quiet_torch_ao():
            if narrow:
                out = quantize_fx._convert_to_reference_decomposed_fx(prepared)  # type: ignore[arg-type]
            else:
                out = quantize_fx.convert_fx(prepared)  # type: ignore[arg-type]
        out.eval()
        return out


def _fx_ranges(prepared: nn.Module) -> list[tuple[int, int]]:
    """``(quant_min, quant_max)`` of every activation observer and weight qconfig of a prepared model."""
    obs: list[Any] = [o for _, o, _, _ in _observers(prepared)]
    obs += [wobs for _, _, wobs in _fx_weight_observers(prepared)]
    return [(int(o.quant_min), int(o.quant_max)) for o in obs if hasattr(o, "quant_min")]


def _fx_weight_observers(prepared: nn.Module) -> list[tuple[str, Tensor, nn.Module]]:
    """``(layer label, float weight, fresh weight observer)`` per weighted FX module.

    ``convert_fx`` builds ``qconfig.weight()`` once per module and calls it on the (BN-folded)
    weight; this rebuilds the same observers for the summary. Fused modules are labelled by the
    fused name (``conv1`` rather than ``conv1.0``).
    """
    from torch.ao.nn.intrinsic import _FusedModule

    mods = dict(prepared.named_modules())
    out = []
    for name, mod in mods.items():
        w = getattr(mod, "weight", None)
        qconfig = getattr(mod, "qconfig", None)
        if not isinstance(w, Tensor) or qconfig is None or _OBS in name or qconfig.weight is None:
            continue
        parent, _, leaf = name.rpartition(".")
        label = parent if leaf == "0" and isinstance(mods.get(parent), _FusedModule) else name
        wobs = qconfig.weight()
        if hasattr(wobs, "quant_min") and hasattr(wobs, "calculate_qparams"):
            out.append((label, w.detach().to("cpu"), wobs))
    return out


class _PT2EFlow:
    """torchao pt2e: ``torch.export`` (dynamic batch) -> ``prepare_pt2e`` -> ``convert_pt2e``."""

    name = "pt2e"

    def __init__(self, quantizer: Any) -> None:
        self.quantizer = quantizer

    def prepare(self, model: nn.Module, example: tuple[Any, ...]) -> nn.Module:
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

        dims = tuple({0: torch.export.Dim("batch", min=1)} if isinstance(a, Tensor) and a.dim() > 0
                     else None for a in example)
        try:
            exported = torch.export.export(model, example, dynamic_shapes=dims)
        except Exception as exc:
            raise RuntimeError(
                f"torch.export failed on {type(model).__name__} ({type(exc).__name__}: {exc}); "
                "make the submodule exportable with a dynamic batch dimension or use mode='fx'"
            ) from exc
        return prepare_pt2e(exported.module(), self.quantizer)  # type: ignore[arg-type]

    def convert(self, prepared: nn.Module) -> nn.Module:
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        with _quiet_torch_ao():
            out = convert_pt2e(prepared)  # type: ignore[arg-type]
        allow_exported_model_train_eval(out)
        out.eval()  # the patched eval() returns None: do not chain it
        return out


def _observers(prepared: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """``(module name, observer, label, kind)`` per distinct observer, in graph order.

    ``label`` names what the observer watches (the producing module or node, e.g. ``conv1``);
    ``kind`` is ``"weight"`` for observers fed by a ``get_attr`` node (pt2e weights), else
    ``"activation"``.
    """
    out: list[tuple[str, nn.Module, str, str]] = []
    seen: set[int] = set()
    graph = getattr(prepared, "graph", None)
    for node in (graph.nodes if graph is not None else ()):
        if node.op != "call_module" or _OBS not in str(node.target):
            continue
        obs = prepared.get_submodule(str(node.target))
        if id(obs) in seen or not hasattr(obs, "calculate_qparams"):
            continue
        seen.add(id(obs))
        src: Any = node.args[0] if node.args else None
        op = getattr(src, "op", "")
        label = str(src.target) if op in ("call_module", "get_attr") else str(getattr(src, "name", "?"))
        out.append((str(node.target), obs, label, "weight" if op == "get_attr" else "activation"))
    return out


# --------------------------------------------------------------------------- distributed merge


def _finite_range(state: Mapping[str, Tensor]) -> bool:
    lo, hi = state.get("min_val"), state.get("max_val")
    return (isinstance(lo, Tensor) and isinstance(hi, Tensor) and lo.numel() > 0
            and bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all()))


def _merge_histograms(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor] | None:
    """Union of ``HistogramObserver`` states: every histogram re-binned onto ``[min, max]``.

    Each source bin's mass is split linearly over the target bins it overlaps (the CDF is
    interpolated at the new edges), so the total count is conserved exactly.
    """
    live = [s for s in states if _finite_range(s)]
    if not live:
        return None
    lo = min(float(s["min_val"]) for s in live)
    hi = max(float(s["max_val"]) for s in live)
    bins = int(live[0]["histogram"].numel())
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    merged = torch.zeros(bins, dtype=torch.float64)
    for s in live:
        hist = s["histogram"].double()
        a, b = float(s["min_val"]), float(s["max_val"])
        if b <= a or hi <= lo:
            idx = 0 if hi <= lo else min(int((a - lo) / (hi - lo) * bins), bins - 1)
            merged[idx] += hist.sum()
            continue
        src_edges = torch.linspace(a, b, hist.numel() + 1, dtype=torch.float64)
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), hist.cumsum(0)])
        pos = torch.searchsorted(src_edges, edges.clamp(a, b), right=True).clamp(1, hist.numel())
        x0, x1 = src_edges[pos - 1], src_edges[pos]
        frac = ((edges.clamp(a, b) - x0) / (x1 - x0)).clamp(0, 1)
        target_cdf = cdf[pos - 1] + frac * (cdf[pos] - cdf[pos - 1])
        merged += target_cdf[1:] - target_cdf[:-1]
    ref = live[0]
    return {**dict(ref), "histogram": merged.to(ref["histogram"].dtype),
            "min_val": torch.tensor(lo, dtype=ref["min_val"].dtype),
            "max_val": torch.tensor(hi, dtype=ref["max_val"].dtype)}


_STREAMING_KEYS = frozenset({"hist_meta", "hist_count", "hist_sum", "hist_sumsq"})


def _merge_streaming(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """REQuant activation observers: merge their exact :class:`StreamingHistogram` states.

    Buffers (see ``requant_plugin.observers.REQuantObserver``): ``hist_meta`` = (width, offset,
    min, max, bins), ``hist_count``/``hist_sum``/``hist_sumsq`` per bin, ``min_val``/``max_val``.
    Counts merge exactly (bins stay anchored at zero, widths are powers of two apart).
    """
    from .core import StreamingHistogram

    hists = []
    for s in states:
        meta = s["hist_meta"].detach().cpu().double().numpy()
        if meta[0] == 0.0 or s["hist_count"].numel() == 0:
            continue
        hists.append(StreamingHistogram.from_state({
            "meta": meta, "count": s["hist_count"].cpu().double().numpy(),
            "sum": s["hist_sum"].cpu().double().numpy(), "sumsq": s["hist_sumsq"].cpu().double().numpy(),
        }))
    out = dict(states[0])
    if not hists:
        return out
    acc = hists[0].copy()
    for h in hists[1:]:
        acc.merge(h)
    st = acc.state()
    for name, key in (("hist_meta", "meta"), ("hist_count", "count"), ("hist_sum", "sum"),
                      ("hist_sumsq", "sumsq")):
        out[name] = torch.from_numpy(st[key]).to(states[0][name].dtype)
    out["min_val"] = torch.tensor(acc.min, dtype=states[0]["min_val"].dtype)
    out["max_val"] = torch.tensor(acc.max, dtype=states[0]["max_val"].dtype)
    return out


def _merge_observer(obs: nn.Module, states: list[dict[str, Tensor]], kind: str = "activation") -> str:
    """Merge per-rank observer states (rank order) into ``obs``; returns the method used.

    Weight observers (pt2e) saw the same DDP-synchronised weights on every rank: rank 0's
    state is taken as is.
    """
    cls = type(obs).__name__
    if kind == "weight":
        obs.load_state_dict(states[0])
        return "weight"
    if set(states[0]) >= _STREAMING_KEYS:
        obs.load_state_dict(_merge_streaming(states))
        return "streaming"
    merge = getattr(obs, "merge", None)
    if callable(merge):
        acc = copy.deepcopy(obs)
        acc.load_state_dict(states[0])
        for s in states[1:]:
            other = copy.deepcopy(obs)
            other.load_state_dict(s)
            acc.merge(other)  # type: ignore[operator]
        obs.load_state_dict(acc.state_dict())
        return "merge"
    keys = set(states[0])
    if "Histogram" in cls and {"histogram", "min_val", "max_val"} <= keys:
        merged = _merge_histograms(states)
        if merged is not None:
            obs.load_state_dict(merged)
        return "histogram"
    if {"min_val", "max_val"} <= keys:
        live = [s for s in states if _finite_range(s)]
        if not live:
            return "empty"
        lo = torch.stack([s["min_val"] for s in live])
        hi = torch.stack([s["max_val"] for s in live])
        moving = "MovingAverage" in cls
        out = dict(states[0])
        out["min_val"] = lo.mean(0) if moving else lo.min(0).values
        out["max_val"] = hi.mean(0) if moving else hi.max(0).values
        obs.load_state_dict(out)
        return "mean" if moving else "minmax"
    obs.load_state_dict(states[0])
    return "rank0"


def _distributed(trainer: Any) -> bool:
    if trainer is not None and int(getattr(trainer, "world_size", 1)) <= 1:
        return False
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def _sync_observers(prepared: nn.Module, trainer: Any) -> dict[str, str]:
    """All-gather every observer's state and merge them identically on every rank."""
    obs = _observers(prepared)
    local = {name: {k: v.detach().to("cpu") for k, v in o.state_dict().items()}
             for name, o, _, _ in obs}
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, local)
    methods: dict[str, str] = {}
    for name, o, label, kind in obs:
        methods[f"{kind}:{label}"] = _merge_observer(o, [g[name] for g in gathered], kind)
    fallback = sorted(k for k, v in methods.items() if v == "rank0")
    if fallback and torch.distributed.get_rank() == 0:
        warnings.warn(
            f"REQuantCalibration: no merge rule for the observers of {fallback}; every rank uses "
            "rank 0's statistics for them (give the observer a merge(other) method to merge)",
            RuntimeWarning, stacklevel=2,
        )
    return methods


# --------------------------------------------------------------------------- summary


def _alpha(scale: Tensor, zp: Tensor, qmin: int, qmax: int, lo: Tensor, hi: Tensor,
           symmetric: bool) -> float:
    """Mean over channels of (clipping-range width) / (observed range width, zero included)."""
    lo, hi = torch.clamp(lo.double(), max=0), torch.clamp(hi.double(), min=0)
    width = 2 * torch.maximum(-lo, hi) if symmetric else hi - lo
    clip = scale.double() * (qmax - qmin)
    ok = width > 0
    return float((clip[ok] / width[ok]).mean()) if bool(ok.any()) else 1.0


def _bits(qmin: int, qmax: int) -> int:
    return round(math.log2(qmax - qmin + 1))


def _observer_row(obs: nn.Module, label: str, kind: str, x: Tensor) -> dict[str, Any] | None:
    """alpha and MSE of the observer's final qparams on a sample of what it saw."""
    try:
        scale, zp = obs.calculate_qparams()  # type: ignore[operator]
    except Exception:
        return None
    qmin, qmax = int(obs.quant_min), int(obs.quant_max)  # type: ignore[arg-type]
    qscheme = getattr(obs, "qscheme", torch.per_tensor_affine)
    x = x.float()
    if qscheme in _PER_CHANNEL:
        axis = int(getattr(obs, "ch_axis", 0)) % max(x.dim(), 1)
        zp_c = zp.to(torch.int32) if not zp.is_floating_point() else zp.float()
        fq = torch.fake_quantize_per_channel_affine(x, scale.float(), zp_c, axis, qmin, qmax)
        dims = [d for d in range(x.dim()) if d != axis]
        lo, hi = x.amin(dim=dims), x.amax(dim=dims)
    else:
        fq = torch.fake_quantize_per_tensor_affine(x, float(scale.reshape(-1)[0]),
                                                   int(zp.reshape(-1)[0]), qmin, qmax)
        lo, hi = x.min().reshape(1), x.max().reshape(1)
        scale = scale.reshape(-1)[:1]
    obs_lo, obs_hi = getattr(obs, "min_val", None), getattr(obs, "max_val", None)
    if (isinstance(obs_lo, Tensor) and isinstance(obs_hi, Tensor) and obs_lo.numel() == lo.numel()
            and bool(torch.isfinite(obs_lo).all()) and bool(torch.isfinite(obs_hi).all())):
        lo, hi = obs_lo.reshape(lo.shape), obs_hi.reshape(hi.shape)
    symmetric = qscheme in _SYMMETRIC
    return {"layer": label, "tensor": kind, "bits": _bits(qmin, qmax),
            "alpha": _alpha(scale, zp, qmin, qmax, lo, hi, symmetric),
            "mse": float((fq - x).double().pow(2).mean())}


def _fx_weight_rows(prepared: nn.Module) -> list[dict[str, Any]]:
    """alpha/MSE per FX weight, from the same weight observers ``convert_fx`` uses."""
    rows = []
    with _quiet_torch_ao():
        for label, w, wobs in _fx_weight_observers(prepared):
            wobs(w)
            row = _observer_row(wobs, label, "weight", w)
            if row is not None:
                rows.append(row)
    return rows


def format_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of calibration rows: layer, tensor, bits, alpha, MSE."""
    lines = ["| layer | tensor | bits | alpha | MSE |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['layer']} | {r['tensor']} | {r['bits']} | {float(r['alpha']):.4f} | "
              f"{float(r['mse']):.3e} |" for r in rows]
    return "\n".join(lines)


def _summary_metrics(rows: Sequence[Mapping[str, Any]], extra: Mapping[str, float]) -> dict[str, float]:
    metrics: dict[str, float] = dict(extra)
    for kind in ("weight", "activation"):
        sel = [r for r in rows if r["tensor"] == kind]
        if sel:
            metrics[f"requant/mean_{kind}_mse"] = sum(float(r["mse"]) for r in sel) / len(sel)
            metrics[f"requant/mean_{kind}_alpha"] = sum(float(r["alpha"]) for r in sel) / len(sel)
    for r in rows:
        key = f"requant/{r['tensor']}/{r['layer']}"
        metrics[f"{key}/alpha"] = float(r["alpha"])
        metrics[f"{key}/mse"] = float(r["mse"])
    return metrics


# --------------------------------------------------------------------------- the callback


class REQuantCalibrationCore:
    """Post-training quantization of one submodule of a LightningModule, as a callback.

    Args:
        attr: dotted name of the float submodule to quantize (``pl_module.get_submodule(attr)``),
            e.g. ``"model"``; the LightningModule itself is never quantized.
        mode: ``"weights"`` (weights-only REQuant, no data), ``"fx"`` (torch.ao FX PTQ) or
            ``"pt2e"`` (torchao pt2e PTQ).
        weight_bits, act_bits: bit widths (``act_bits`` is ignored in ``"weights"`` mode). With
            a custom ``qconfig_mapping``/``quantizer`` the bits are whatever it says.
        space, per_channel: weight grid for ``"weights"`` mode (``"sqrt"`` = REQuant's power
            transform, ``"uniform"``) and per-channel ranges; ``quantize_kwargs`` passes any
            other :func:`requant_plugin.quantize_weights` option (``fold_bn``, ``p``, ...).
        qconfig_mapping: FX ``QConfigMapping``; default ``requant_plugin.qconfig``'s REQuant
            mapping when that module is installed, else torch's ``get_default_qconfig_mapping("x86")``
            (8-bit only).
        quantizer: pt2e ``Quantizer``; default ``requant_plugin.pt2e``'s REQuant quantizer when
            available, else torchao's ``X86InductorQuantizer`` with its default config (8-bit).
        num_batches: calibration batches (per rank under DDP).
        dataloader: ``"train"``, ``"val"`` or any iterable of batches.
        input_fn: ``batch -> input`` (a tensor or a tuple of positional args); default ``batch[0]``.
        target_fn: ``batch -> int labels or None`` for the test-time accuracy comparison.
        calibrate_after_fit: calibrate in ``on_fit_end``.
        test_quantized: swap the quantized submodule in for ``trainer.test``.
        compare_float: during ``trainer.test`` also run the float submodule on each batch and log
            ``requant/fp32_acc``, ``requant/quant_acc``, ``requant/top1_agreement``, ``requant/sqnr_db``.
        export_onnx: path of an ONNX Q/DQ model (TensorRT-ready) written after an FX/pt2e
            calibration on global rank 0 by ``requant_plugin.export.export_onnx_qdq`` from the
            float submodule and this rank's calibration batches, with ``weight_bits``,
            ``act_bits``, ``space`` and ``per_channel`` (needs ``pip install 'requant-plugin[onnx]'``);
            the :class:`ExportReport` lands in ``callback.export_report``.
        export_kwargs: more keyword arguments for ``export_onnx_qdq`` (``opset``, ``fp16``, ...).
        progress: show a tqdm bar while calibrating (only when the trainer's progress bar is
            enabled, on global rank 0).
        verbose: print the per-layer summary table after calibration (global rank 0).
    """

    def __init__(
        self,
        attr: str = "model",
        *,
        mode: str = "fx",
        weight_bits: int = 8,
        act_bits: int = 8,
        space: str = "sqrt",
        per_channel: bool = True,
        quantize_kwargs: Mapping[str, Any] | None = None,
        qconfig_mapping: Any = None,
        quantizer: Any = None,
        num_batches: int = 8,
        dataloader: str | Iterable[Any] = "train",
        input_fn: Callable[[Any], Any] = default_input_fn,
        target_fn: Callable[[Any], Tensor | None] = default_target_fn,
        calibrate_after_fit: bool = True,
        test_quantized: bool = True,
        compare_float: bool = True,
        export_onnx: str | None = None,
        export_kwargs: Mapping[str, Any] | None = None,
        progress: bool = True,
        verbose: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(attr, str) or not attr:
            raise ValueError("attr must name a submodule of the LightningModule, e.g. attr='model'")
        for name, bits in (("weight_bits", weight_bits), ("act_bits", act_bits)):
            if not isinstance(bits, int) or not 2 <= bits <= 8:
                raise ValueError(f"{name} must be an int in [2, 8], got {bits!r}")
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        if isinstance(dataloader, str) and dataloader not in ("train", "val"):
            raise ValueError(f"dataloader must be 'train', 'val' or an iterable, got {dataloader!r}")
        if space not in ("sqrt", "uniform"):
            raise ValueError(f"space must be 'sqrt' or 'uniform', got {space!r}")
        if mode != "fx" and qconfig_mapping is not None:
            raise ValueError("qconfig_mapping is for mode='fx'; use quantizer= for mode='pt2e'")
        if mode != "pt2e" and quantizer is not None:
            raise ValueError("quantizer is for mode='pt2e'; use qconfig_mapping= for mode='fx'")
        if mode == "weights" and export_onnx is not None:
            raise ValueError("export_onnx needs calibration data: use mode='fx' or 'pt2e' (the "
                             "export calibrates activations on the same batches)")
        self.attr = attr
        self.mode = mode
        self.weight_bits = weight_bits
        self.act_bits = act_bits
        self.space = space
        self.per_channel = per_channel
        self.quantize_kwargs = dict(quantize_kwargs or {})
        self.qconfig_mapping = qconfig_mapping
        self.quantizer = quantizer
        self.num_batches = num_batches
        self.dataloader = dataloader
        self.input_fn = input_fn
        self.target_fn = target_fn
        self.calibrate_after_fit = calibrate_after_fit
        self.test_quantized = test_quantized
        self.compare_float = compare_float
        self.export_onnx = export_onnx
        self.export_kwargs = dict(export_kwargs or {})
        self.progress = progress
        self.verbose = verbose
        self.export_report: Any = None
        self._state: dict[str, Any] = {}
        self._quantized: nn.Module | None = None
        self._quantized_fp: str | None = None
        self._swapped: tuple[nn.Module, str, nn.Module] | None = None
        self._compare: dict[str, float] = {}
        super().__init__()

    # ------------------------------------------------------------------ public

    @property
    def quantized_model(self) -> QuantizedModule | None:
        """The quantized copy of the submodule, or ``None`` before calibration.

        It is a :class:`QuantizedModule`: callable from any device (FX/pt2e kernels run on the
        CPU) and under ``Trainer(deterministic=True)``; ``.module`` is the converted
        ``GraphModule`` (or, in ``"weights"`` mode, the float model with quantized weights).
        """
        if self._quantized is None:
            return None
        return QuantizedModule(self._quantized, None if self.mode == "weights" else "cpu")

    @property
    def summary(self) -> list[dict[str, Any]]:
        """Per-layer rows ``{layer, tensor, bits, alpha, mse}`` of the last calibration."""
        return [dict(r) for r in self._state.get("summary", [])]

    @property
    def summary_table(self) -> str:
        """The summary as a markdown table."""
        return format_summary(self.summary)

    @property
    def calibrated(self) -> bool:
        """True once calibration ran or a calibrated state was loaded."""
        return bool(self._state.get("calibrated", False))

    def calibrate(self, trainer: Any, pl_module: nn.Module, dataloader: Iterable[Any] | None = None
                  ) -> QuantizedModule:
        """Quantize a copy of ``pl_module.<attr>`` now and return it (``pl_module`` is untouched).

        The result is :attr:`quantized_model` (a :class:`QuantizedModule`).

        ``"weights"`` mode needs no data. FX/pt2e modes run ``num_batches`` batches of
        ``dataloader`` (argument, else the configured one) through the observers; under DDP
        the observer statistics are merged across ranks first. The summary is logged to the
        trainer's loggers (global rank 0) and the ONNX export runs when configured.
        ``trainer`` may be ``None`` when a dataloader is given (or in ``"weights"`` mode).
        """
        float_module = self._target(pl_module)
        t0 = time.perf_counter()
        with torch.inference_mode(False), torch.no_grad():
            state = _float_state(float_module, trainer)
            source = _plain_copy(float_module, state)
            if self.mode == "weights":
                quantized, rows = self._quantize_weights(source, trainer)
                quantized.to(_module_device(float_module))
                stats: dict[str, Any] = {"observer_state": {}, "example_inputs": [], "batches": 0,
                                         "samples": 0}
                batches: list[tuple[Any, ...]] = []
            else:
                loader = dataloader if dataloader is not None else self._loader(trainer)
                batches = self._collect(loader)
                quantized, rows, stats = self._calibrate_observers(source, batches, trainer)
        seconds = time.perf_counter() - t0
        self._quantized, self._quantized_fp = quantized, weights_fingerprint(state)
        self._state = {
            "version": STATE_VERSION, "calibrated": True, "config": self._config(),
            "fingerprint": self._quantized_fp, "summary": rows,
            "observer_state": stats["observer_state"], "example_inputs": stats["example_inputs"],
            "batches": int(stats["batches"]), "samples": int(stats["samples"]),
            "seconds": float(seconds),
        }
        self._report(trainer)
        if self.export_onnx is not None and _is_global_zero(trainer):
            self._export(_plain_copy(float_module, state), batches)
        out = self.quantized_model
        assert out is not None
        return out

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        """Validate the configuration; raises with the fix for anything it cannot support."""
        self._check_strategy(trainer)
        self._target(pl_module)
        self._resolve_flow()
        if self.export_onnx is not None:
            _export_fn()
        stage = str(getattr(stage, "value", stage))
        if self.mode == "weights" or not isinstance(self.dataloader, str):
            return
        if stage == "fit" and self.calibrate_after_fit and self.dataloader == "val":
            source = _data_source(trainer, "val")
            if source is not None and not _source_defined(source):
                raise ValueError(
                    "REQuantCalibration(dataloader='val') but this fit has no val dataloader; pass "
                    "val_dataloaders=..., define val_dataloader(), or use dataloader='train'"
                )
        if (stage == "test" and self.test_quantized and not self.calibrated
                and getattr(trainer, "ckpt_path", None) is None):
            source = _data_source(trainer, self.dataloader)
            if source is None or not _source_defined(source):
                raise ValueError(
                    f"REQuantCalibration has no calibration state and trainer.test has no "
                    f"{self.dataloader} dataloader to calibrate on: run trainer.fit first, pass "
                    "ckpt_path= of a checkpoint saved after calibration, give the datamodule a "
                    f"{self.dataloader}_dataloader(), or pass REQuantCalibration(dataloader=<iterable>)"
                )

    def on_fit_end(self, trainer: Any, pl_module: nn.Module) -> None:
        """Calibrate after training (``pl_module.log`` is not allowed here: loggers are used)."""
        if self.calibrate_after_fit:
            self.calibrate(trainer, pl_module)

    def on_test_start(self, trainer: Any, pl_module: nn.Module) -> None:
        """Swap the quantized submodule in (building or calibrating it first when needed)."""
        if not self.test_quantized:
            return
        float_module = self._target(pl_module)
        self._ensure_quantized(trainer, pl_module, float_module)
        assert self._quantized is not None
        runner = QuantizedModule(self._quantized, None if self.mode == "weights" else "cpu",
                                 remember_last=self.compare_float)
        if self.mode == "weights":
            runner.to(_module_device(float_module))
        parent_name, _, child = self.attr.rpartition(".")
        parent = pl_module.get_submodule(parent_name) if parent_name else pl_module
        setattr(parent, child, runner)
        self._swapped = (parent, child, float_module)
        self._compare = dict.fromkeys(("n", "n_labeled", "fp32", "quant", "agree", "signal",
                                       "noise"), 0.0)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate FP32-vs-quantized accuracy, top-1 agreement and SQNR on this batch."""
        if self._swapped is None or not self.compare_float:
            return
        parent, child, float_module = self._swapped
        args = _as_args(self.input_fn(batch))
        runner = getattr(parent, child)
        q_all = runner.last_output_for(args) if isinstance(runner, QuantizedModule) else None
        q_out = _first_tensor(q_all if q_all is not None else runner(*args))
        f_out = _first_tensor(float_module(*args))
        if f_out is None or q_out is None or f_out.shape != q_out.shape:
            return
        f, q = f_out.detach().float(), q_out.detach().float().to(f_out.device)
        c = self._compare
        c["signal"] += float(f.double().pow(2).sum())
        c["noise"] += float((f - q).double().pow(2).sum())
        if f.dim() == 2:
            fp, qp = f.argmax(1), q.argmax(1)
            c["n"] += fp.numel()
            c["agree"] += float((fp == qp).sum())
            y = self.target_fn(batch)
            if y is not None and y.shape == fp.shape:
                y = y.to(fp.device)
                c["n_labeled"] += y.numel()
                c["fp32"] += float((fp == y).sum())
                c["quant"] += float((qp == y).sum())

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Log the comparison metrics (summed over ranks, so exact under DDP)."""
        if self._swapped is None or not self.compare_float or not self._compare:
            return
        keys = sorted(self._compare)
        totals = torch.tensor([self._compare[k] for k in keys], dtype=torch.float64)
        if _distributed(trainer):
            dev = getattr(getattr(trainer, "strategy", None), "root_device", torch.device("cpu"))
            t = totals.to(dev)
            torch.distributed.all_reduce(t)
            totals = t.cpu()
        c = dict(zip(keys, totals.tolist(), strict=True))
        metrics = {}
        if c["n_labeled"] > 0:
            metrics["requant/fp32_acc"] = c["fp32"] / c["n_labeled"]
            metrics["requant/quant_acc"] = c["quant"] / c["n_labeled"]
        if c["n"] > 0:
            metrics["requant/top1_agreement"] = c["agree"] / c["n"]
        if c["signal"] > 0:
            metrics["requant/sqnr_db"] = 10 * math.log10(c["signal"] / max(c["noise"], 1e-30))
        for k, v in metrics.items():
            pl_module.log(k, v, on_step=False, on_epoch=True, sync_dist=False)

    def on_test_end(self, trainer: Any, pl_module: nn.Module) -> None:
        """Put the float submodule back."""
        self._restore()

    def on_exception(self, trainer: Any, pl_module: nn.Module, exception: BaseException) -> None:
        """Put the float submodule back if a run fails while it is swapped out."""
        self._restore()

    def teardown(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        """Put the float submodule back (idempotent safety net)."""
        self._restore()

    def state_dict(self) -> dict[str, Any]:
        """Calibration state: tensors, numbers, strings, lists and dicts only (weights_only-safe)."""
        if not self._state:
            return {"version": STATE_VERSION, "calibrated": False, "config": self._config()}
        return copy.deepcopy(self._state)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a calibration; an uncalibrated state (a checkpoint from before calibration)
        leaves the current calibration in place (its fingerprint decides whether it is used)."""
        if not state_dict.get("calibrated", False):
            return
        if int(state_dict.get("version", -1)) != STATE_VERSION:
            raise ValueError(
                f"REQuantCalibration state version {state_dict.get('version')} is not "
                f"{STATE_VERSION}; recalibrate (the checkpoint's float weights are still usable)"
            )
        self._state = copy.deepcopy(dict(state_dict))
        self._quantized, self._quantized_fp = None, None

    # ------------------------------------------------------------------ internals

    def _config(self) -> dict[str, Any]:
        observers = "default"
        if self.mode == "fx":
            observers = "custom" if self.qconfig_mapping is not None else _default_fx_name()
        elif self.mode == "pt2e":
            observers = "custom" if self.quantizer is not None else _default_pt2e_name()
        cfg: dict[str, Any] = {"mode": self.mode, "attr": self.attr, "weight_bits": self.weight_bits,
                               "observers": observers}
        if self.mode == "weights":
            cfg.update(space=self.space, per_channel=self.per_channel,
                       quantize_kwargs={k: v for k, v in sorted(self.quantize_kwargs.items())
                                        if isinstance(v, (bool, int, float, str))})
        else:
            cfg["act_bits"] = self.act_bits
        return cfg

    def _target(self, pl_module: nn.Module) -> nn.Module:
        if self._swapped is not None:
            return self._swapped[2]
        try:
            module = pl_module.get_submodule(self.attr)
        except AttributeError:
            children = [n for n, _ in pl_module.named_children()]
            raise ValueError(
                f"REQuantCalibration(attr={self.attr!r}): {type(pl_module).__name__} has no "
                f"submodule {self.attr!r}; its child modules are {children}: pass attr=<one of them>"
            ) from None
        if isinstance(module, QuantizedModule):
            raise RuntimeError(f"{self.attr!r} is currently a quantized stand-in; this is a bug")
        return module

    def _check_strategy(self, trainer: Any) -> None:
        strategy = getattr(trainer, "strategy", None)
        if strategy is None:
            return
        names = [c.__name__ for c in type(strategy).__mro__]
        bad = [n for n in names if n in _UNSUPPORTED_STRATEGIES or "XLA" in n]
        if bad or not any(n in _SUPPORTED_STRATEGIES for n in names):
            raise ValueError(
                f"REQuantCalibration does not support {type(strategy).__name__}: it needs the full "
                "float submodule on every rank; use strategy='ddp' or a single device"
            )
        start = getattr(strategy, "_start_method", "popen")
        if "DDPStrategy" in names and start != "popen":
            raise ValueError(
                f"REQuantCalibration does not support DDP with start method {start!r} "
                "(ddp_spawn/ddp_fork/ddp_notebook): the calibration made in worker processes would "
                "not come back to the main process; use strategy='ddp'"
            )

    def _resolve_flow(self) -> _FXFlow | _PT2EFlow | None:
        if self.mode == "fx":
            mapping = self.qconfig_mapping
            if mapping is None:
                mapping = _default_fx_mapping(self.weight_bits, self.act_bits)
            return _FXFlow(mapping)
        if self.mode == "pt2e":
            try:
                import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
            except ImportError as exc:
                raise ImportError(
                    "REQuantCalibration(mode='pt2e') needs torchao: pip install 'requant-plugin[pt2e]'"
                ) from exc
            quantizer = self.quantizer
            if quantizer is None:
                quantizer = _default_pt2e_quantizer(self.weight_bits, self.act_bits)
            return _PT2EFlow(quantizer)
        return None

    def _quantize_weights(self, source: nn.Module, trainer: Any
                          ) -> tuple[nn.Module, list[dict[str, Any]]]:
        """Weights-only REQuant of ``source`` (a private plain copy), in place."""
        from .ptq import quantize_weights

        kwargs: dict[str, Any] = {"progress": self.progress and _progress_enabled(trainer)}
        kwargs.update(self.quantize_kwargs)
        model, report = quantize_weights(
            source, self.weight_bits, space=self.space, per_channel=self.per_channel, inplace=True,
            **kwargs,
        )
        rows = [{"layer": x.name, "tensor": "weight", "bits": x.bits, "alpha": x.alpha, "mse": x.mse}
                for x in report.layers]
        return model, rows

    def _loader(self, trainer: Any) -> Iterable[Any]:
        if not isinstance(self.dataloader, str):
            return self.dataloader
        if trainer is None:
            raise ValueError("calibrate(trainer=None, ...) needs a dataloader argument")
        live = trainer.train_dataloader if self.dataloader == "train" else trainer.val_dataloaders
        loader = _first_loader(live) if live is not None else None
        if loader is None:
            source = _data_source(trainer, self.dataloader)
            if source is not None and _source_defined(source):
                try:
                    loader = _first_loader(source.dataloader())
                except Exception as exc:
                    raise RuntimeError(
                        f"REQuantCalibration could not get the {self.dataloader} dataloader "
                        f"({type(exc).__name__}: {exc}); pass REQuantCalibration(dataloader=<iterable>)"
                    ) from exc
        if loader is None:
            raise ValueError(
                f"REQuantCalibration needs a {self.dataloader} dataloader to calibrate; pass "
                "REQuantCalibration(dataloader=<iterable>) or attach one to the trainer"
            )
        return loader

    def _collect(self, loader: Iterable[Any]) -> list[tuple[Any, ...]]:
        """The inputs of the first ``num_batches`` batches, detached on the CPU."""
        batches: list[tuple[Any, ...]] = []
        it: Iterator[Any] = iter(loader)
        for batch in it:
            batches.append(_detach_cpu(_as_args(self.input_fn(batch))))
            if len(batches) >= self.num_batches:
                break
        if not batches:
            raise ValueError("the calibration dataloader yielded no batch")
        return batches

    def _calibrate_observers(
        self, source: nn.Module, batches: list[tuple[Any, ...]], trainer: Any,
    ) -> tuple[nn.Module, list[dict[str, Any]], dict[str, Any]]:
        """prepare ``source`` (a private plain copy), run the batches, merge ranks, convert."""
        flow = self._resolve_flow()
        assert flow is not None
        prepared = flow.prepare(source, batches[0])
        observers = _observers(prepared)
        samples: dict[int, Tensor] = {}

        def capture(module: nn.Module, args: tuple[Any, ...]) -> None:
            if id(module) in samples or not args or not isinstance(args[0], Tensor):
                return
            x = args[0].detach().float()
            if getattr(module, "qscheme", None) not in _PER_CHANNEL and x.numel() > _SAMPLE_CAP:
                x = x.reshape(-1)[:: x.numel() // _SAMPLE_CAP][:_SAMPLE_CAP]
            samples[id(module)] = x.clone()

        handles = [obs.register_forward_pre_hook(capture) for _, obs, _, _ in observers]
        from tqdm.auto import tqdm

        bar = tqdm(batches, desc=f"REQuant calibration ({flow.name})", unit="batch", leave=False,
                   disable=not (self.progress and _progress_enabled(trainer)))
        try:
            for args in bar:
                prepared(*args)
        finally:
            bar.close()
            for h in handles:
                h.remove()
        if _distributed(trainer):
            _sync_observers(prepared, trainer)
        rows = [r for _, obs, label, kind in observers if id(obs) in samples
                for r in [_observer_row(obs, label, kind, samples[id(obs)])] if r is not None]
        if _distributed(trainer):  # each rank measured MSE on its own sample: average them
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, [r["mse"] for r in rows])
            for i, r in enumerate(rows):
                r["mse"] = sum(float(g[i]) for g in gathered) / len(gathered)
        observer_state = {k: v.detach().to("cpu").clone() for k, v in prepared.state_dict().items()
                          if _OBS in k}
        if flow.name == "fx":
            rows = _fx_weight_rows(prepared) + rows
        quantized = flow.convert(prepared)
        example = [{"shape": list(a.shape), "dtype": str(a.dtype).replace("torch.", "")}
                   for a in batches[0] if isinstance(a, Tensor)]
        samples_seen = sum(int(a[0].shape[0]) if isinstance(a[0], Tensor) and a[0].dim() else 1
                           for a in batches)
        return quantized, rows, {"observer_state": observer_state, "example_inputs": example,
                                        "batches": len(batches), "samples": samples_seen}

    def _rebuild(self, source: nn.Module) -> nn.Module:
        """Quantized module from the stored observer state and ``source`` (a plain float copy)."""
        flow = self._resolve_flow()
        assert flow is not None
        example = tuple(torch.zeros(e["shape"], dtype=getattr(torch, e["dtype"]))
                        for e in self._state["example_inputs"])
        with torch.inference_mode(False), torch.no_grad():
            prepared = flow.prepare(source, example)
            state = self._state["observer_state"]
            result = prepared.load_state_dict(state, strict=False)
            missing = [k for k in result.missing_keys if _OBS in k]
            if missing or result.unexpected_keys:
                raise RuntimeError(
                    "the stored REQuantCalibration observer state does not fit this model/qconfig "
                    f"(missing {missing[:4]}, unexpected {list(result.unexpected_keys)[:4]}); construct "
                    "the callback with the settings used for calibration, or recalibrate"
                )
            return flow.convert(prepared)

    def _ensure_quantized(self, trainer: Any, pl_module: nn.Module, float_module: nn.Module) -> None:
        """Make ``self._quantized`` match the current float weights and settings.

        Reuse it when the fingerprint matches; rebuild it from a loaded state (no data); else
        calibrate on the configured dataloader, or raise saying why there is nothing to use.
        """
        with torch.inference_mode(False):
            state = _float_state(float_module, trainer)
        fp = weights_fingerprint(state)
        if self._quantized is not None and self._quantized_fp == fp and self._state_valid(fp):
            return
        if self.mode == "weights":
            self.calibrate(trainer, pl_module)
            return
        if self._state_valid(fp):
            with torch.inference_mode(False):
                source = _plain_copy(float_module, state)
            self._quantized, self._quantized_fp = self._rebuild(source), fp
            self._report(trainer)
            return
        why = "no calibration yet"
        if self.calibrated:
            why = ("the float weights changed since calibration" if self._state.get("fingerprint") != fp
                   else "the callback settings differ from the calibration's")
        log.info("REQuantCalibration: calibrating before test (%s)", why)
        try:
            loader = self._loader(trainer)
        except (ValueError, RuntimeError) as exc:
            raise RuntimeError(f"REQuantCalibration cannot quantize for trainer.test: {why}, and {exc}"
                               ) from exc
        self.calibrate(trainer, pl_module, loader)

    def _state_valid(self, fp: str) -> bool:
        return (self.calibrated and self._state.get("fingerprint") == fp
                and self._state.get("config") == self._config())

    def _restore(self) -> None:
        if self._swapped is None:
            return
        parent, child, float_module = self._swapped
        runner = getattr(parent, child)
        if isinstance(runner, QuantizedModule):
            runner._last = None
        setattr(parent, child, float_module)
        self._swapped = None

    def _report(self, trainer: Any) -> None:
        if not _is_global_zero(trainer):
            return
        rows = self._state.get("summary", [])
        extra = {"requant/calibration_batches": float(self._state.get("batches", 0)),
                 "requant/calibration_samples": float(self._state.get("samples", 0)),
                 "requant/calibration_seconds": float(self._state.get("seconds", 0.0)),
                 "requant/layers": float(len(rows))}
        metrics = _summary_metrics(rows, extra)
        step = int(getattr(trainer, "global_step", 0) or 0) if trainer is not None else 0
        for logger in getattr(trainer, "loggers", None) or []:
            logger.log_metrics(metrics, step=step)
            logger.save()
        table = format_summary(rows)
        log.info("REQuant calibration (%s):\n%s", self.mode, table)
        if self.verbose:
            print(f"REQuant calibration summary (mode={self.mode}):\n{table}")

    def _export(self, source: nn.Module, batches: list[tuple[Any, ...]]) -> None:
        export = _export_fn()
        kwargs: dict[str, Any] = {"weight_bits": self.weight_bits, "act_bits": self.act_bits,
                                  "space": self.space, "per_channel": self.per_channel}
        kwargs.update(self.export_kwargs)
        self.export_report = export(source, [b[0] for b in batches], self.export_onnx, **kwargs)
        log.info("REQuantCalibration: wrote %s", self.export_onnx)


# --------------------------------------------------------------------------- trainer helpers


def _is_global_zero(trainer: Any) -> bool:
    return trainer is None or bool(getattr(trainer, "is_global_zero", True))


def _progress_enabled(trainer: Any) -> bool:
    if trainer is None:
        return True
    bar = getattr(trainer, "progress_bar_callback", None)
    return bar is not None and bool(getattr(bar, "is_enabled", False)) and _is_global_zero(trainer)


def _data_source(trainer: Any, which: str) -> Any:
    """Lightning's record of where the train/val dataloader comes from (None if unknown)."""
    fit_loop = getattr(trainer, "fit_loop", None)
    if fit_loop is None:
        return None
    if which == "train":
        return getattr(fit_loop, "_data_source", None)
    return getattr(getattr(getattr(fit_loop, "epoch_loop", None), "val_loop", None), "_data_source", None)


def _source_defined(source: Any) -> bool:
    if getattr(source, "instance", None) is None:
        return False
    try:
        return bool(source.is_defined())
    except Exception:
        return True


def _default_fx_name() -> str:
    try:
        import requant_plugin.qconfig  # noqa: F401
    except ImportError:
        return "torch-x86"
    return "requant"


def _default_fx_mapping(weight_bits: int, act_bits: int) -> Any:
    """REQuant's FX QConfigMapping when ``requant_plugin.qconfig`` exists, else torch's x86 one."""
    try:
        from requant_plugin.qconfig import get_requant_qconfig_mapping
    except ImportError:
        if (weight_bits, act_bits) != (8, 8):
            raise ValueError(
                "weight_bits/act_bits other than 8 need requant_plugin.qconfig (not installed) or "
                "a custom qconfig_mapping=..."
            ) from None
        from torch.ao.quantization import get_default_qconfig_mapping

        return get_default_qconfig_mapping("x86")
    return get_requant_qconfig_mapping(weight_bits=weight_bits, act_bits=act_bits, backend="x86")


def _pt2e_factory() -> Callable[..., Any] | None:
    try:
        from requant_plugin import pt2e as rq_pt2e
    except ImportError:
        return None
    factory = getattr(rq_pt2e, "get_requant_quantizer", None)
    return factory if callable(factory) else None


def _default_pt2e_name() -> str:
    return "torchao-x86" if _pt2e_factory() is None else "requant"


def _default_pt2e_quantizer(weight_bits: int, act_bits: int) -> Any:
    """REQuant's pt2e quantizer when ``requant_plugin.pt2e`` offers one, else torchao's x86 one."""
    factory = _pt2e_factory()
    if factory is not None:
        return factory(weight_bits=weight_bits, act_bits=act_bits)
    if (weight_bits, act_bits) != (8, 8):
        raise ValueError("weight_bits/act_bits other than 8 need requant_plugin.pt2e or a custom "
                         "quantizer=...")
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())


def _export_fn() -> Callable[..., Any]:
    import importlib.util

    try:
        missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            raise ImportError(f"missing {missing}")
        from requant_plugin.export import export_onnx_qdq
    except ImportError as exc:
        raise ImportError(
            "REQuantCalibration(export_onnx=...) needs requant_plugin.export and ONNX: "
            f"pip install 'requant-plugin[onnx]' ({exc})"
        ) from exc
    return export_onnx_qdq  # type: ignore[no-any-return]
