"""Batch plumbing of the Lightning callback: a batch's inputs/targets, device moves, first tensor/loader."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


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
