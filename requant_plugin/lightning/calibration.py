"""One calibration, Lightning-free: weights-only REQuant, or FX/pt2e observers run on the
calibration batches (merged across DDP ranks), the state record it leaves, and the ONNX export.

The state (``REQuantCalibration.state_dict()``) holds only tensors, numbers, strings, lists and
dicts (``torch.load(weights_only=True)``-safe): ``version``, ``calibrated``, ``config`` (the
settings record), ``fingerprint`` (of the float weights), ``summary`` rows, ``observer_state``
(the ``activation_post_process`` buffers), ``example_inputs`` (shapes/dtypes), ``batches``,
``samples`` and ``seconds``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..deps import require
from .config import CalibrationConfig
from .flows import OBS, Flow, observers
from .merge import sync_observers
from .summary import PER_CHANNEL, fx_weight_rows, observer_row
from .trainer import distributed

__all__ = [
    "STATE_VERSION", "calibrate_observers", "empty_stats", "example_inputs", "export_fn", "export_onnx",
    "new_state", "quantize_weights_only",
]

STATE_VERSION = 1
_SAMPLE_CAP = 1 << 16
_EXPORT = "REQuantCalibration(export_onnx=...)"


def calibrate_observers(flow: Flow, source: nn.Module, batches: list[tuple[Any, ...]], trainer: Any,
                        show_progress: bool) -> tuple[nn.Module, list[dict[str, Any]], dict[str, Any]]:
    """prepare ``source`` (a private plain copy), run the batches, merge ranks, convert.

    Returns the converted model, the summary rows (FX weight rows first; under DDP each
    activation row's MSE is the mean of the ranks') and the stats of :func:`new_state`.
    """
    prepared = flow.prepare(source, batches[0])
    found = observers(prepared)
    samples: dict[int, Tensor] = {}

    def capture(module: nn.Module, args: tuple[Any, ...]) -> None:
        if id(module) in samples or not args or not isinstance(args[0], Tensor):
            return
        x = args[0].detach().float()
        if getattr(module, "qscheme", None) not in PER_CHANNEL and x.numel() > _SAMPLE_CAP:
            x = x.reshape(-1)[:: x.numel() // _SAMPLE_CAP][:_SAMPLE_CAP]
        samples[id(module)] = x.clone()

    handles = [obs.register_forward_pre_hook(capture) for _, obs, _, _ in found]
    from tqdm.auto import tqdm

    bar = tqdm(batches, desc=f"REQuant calibration ({flow.name})", unit="batch", leave=False,
               disable=not show_progress)
    try:
        for args in bar:
            prepared(*args)
    finally:
        bar.close()
        for h in handles:
            h.remove()
    if distributed(trainer):
        sync_observers(prepared, trainer)
    rows = [r for _, obs, label, kind in found if id(obs) in samples
            for r in [observer_row(obs, label, kind, samples[id(obs)])] if r is not None]
    if distributed(trainer):  # each rank measured MSE on its own sample: average them
        gathered: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, [r["mse"] for r in rows])
        for i, r in enumerate(rows):
            r["mse"] = sum(float(g[i]) for g in gathered) / len(gathered)
    observer_state = {k: v.detach().to("cpu").clone() for k, v in prepared.state_dict().items()
                      if OBS in k}
    if flow.name == "fx":
        rows = fx_weight_rows(prepared) + rows
    quantized = flow.convert(prepared)
    example = [{"shape": list(a.shape), "dtype": str(a.dtype).replace("torch.", "")}
               for a in batches[0] if isinstance(a, Tensor)]
    samples_seen = sum(int(a[0].shape[0]) if isinstance(a[0], Tensor) and a[0].dim() else 1
                       for a in batches)
    return quantized, rows, {"observer_state": observer_state, "example_inputs": example,
                             "batches": len(batches), "samples": samples_seen}


def quantize_weights_only(source: nn.Module, config: CalibrationConfig, show_progress: bool
                          ) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Weights-only REQuant of ``source`` (a private plain copy), in place: the grid of
    :meth:`CalibrationConfig.weight_grid`, then ``quantize_kwargs`` (what was written wins)."""
    from ..ptq import quantize_weights

    kwargs: dict[str, Any] = {"progress": show_progress}
    kwargs.update({k: v for k, v in config.weight_grid().items() if v is not None})
    kwargs.update(config.quantize_kwargs)
    model, report = quantize_weights(source, config.weight_bits, inplace=True, **kwargs)
    rows = [{"layer": x.name, "tensor": "weight", "bits": x.bits, "alpha": x.alpha, "mse": x.mse}
            for x in report.layers]
    return model, rows


def empty_stats() -> dict[str, Any]:
    """The stats of a calibration that ran no batch (``"weights"`` mode)."""
    return {"observer_state": {}, "example_inputs": [], "batches": 0, "samples": 0}


def new_state(record: Mapping[str, Any], fingerprint: str, rows: list[dict[str, Any]],
              stats: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """The calibrated state: settings ``record``, weights ``fingerprint``, summary ``rows``, ``stats``."""
    return {
        "version": STATE_VERSION, "calibrated": True, "config": dict(record),
        "fingerprint": fingerprint, "summary": rows,
        "observer_state": stats["observer_state"], "example_inputs": stats["example_inputs"],
        "batches": int(stats["batches"]), "samples": int(stats["samples"]),
        "seconds": float(seconds),
    }


def example_inputs(state: Mapping[str, Any]) -> tuple[Tensor, ...]:
    """Zero tensors of the stored example-input shapes/dtypes (to ``prepare`` again, no data)."""
    return tuple(torch.zeros(e["shape"], dtype=getattr(torch, e["dtype"]))
                 for e in state["example_inputs"])


def export_fn() -> Callable[..., Any]:
    """:func:`requant_plugin.export.export_onnx_qdq`, or :class:`MissingDependency` naming the extra."""
    require("onnx", _EXPORT)
    require("onnxruntime", _EXPORT)
    from ..export import export_onnx_qdq

    return export_onnx_qdq  # type: ignore[no-any-return]


def export_onnx(config: CalibrationConfig, source: nn.Module, batches: list[tuple[Any, ...]]) -> Any:
    """Write ``config.export_onnx`` from ``source`` (a plain float copy) and the first inputs of the
    calibration batches with the config's bits and grid (``"sqrt"``, per channel unless written);
    returns the ``ExportReport``."""
    kwargs: dict[str, Any] = {"weight_bits": config.weight_bits, "act_bits": config.act_bits,
                              "space": config.space or "sqrt",
                              "per_channel": True if config.per_channel is None else config.per_channel}
    if "granularity" in config.export_kwargs:  # the user's spelling of the same option wins
        kwargs.pop("per_channel")
    kwargs.update(config.export_kwargs)
    return export_fn()(source, [b[0] for b in batches], config.export_onnx, **kwargs)
