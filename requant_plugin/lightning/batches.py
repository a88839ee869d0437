"""Batch plumbing of the callback: a batch's inputs/targets, device moves, the first tensor/loader,
and the calibration inputs of the first ``num_batches`` batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "as_args", "collect_inputs", "default_input_fn", "default_target_fn", "detach_cpu", "first_loader",
    "first_tensor", "to_device",
]


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


def as_args(inputs: Any) -> tuple[Any, ...]:
    """``input_fn``'s result as positional arguments: a list/tuple as is, anything else as one."""
    return tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)


def to_device(obj: Any, device: torch.device) -> Any:
    """Every tensor of a (nested list/tuple/dict) structure moved to ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        moved = [to_device(o, device) for o in obj]
        return type(obj)(moved) if isinstance(obj, list) else tuple(moved)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def detach_cpu(obj: Any) -> Any:
    """Detached CPU copies of a tensor or of the tensors of a list/tuple (returned as a tuple)."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, (list, tuple)):
        return tuple(detach_cpu(o) for o in obj)
    return obj


def first_tensor(obj: Any) -> Tensor | None:
    """The first tensor of a (nested list/tuple/dict) structure, depth first, or ``None``."""
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for o in obj:
            t = first_tensor(o)
            if t is not None:
                return t
    if isinstance(obj, dict):
        for o in obj.values():
            t = first_tensor(o)
            if t is not None:
                return t
    return None


def first_loader(loaders: Any) -> Any:
    """The first dataloader of what Lightning stores (a loader, a list/tuple or a dict of them)."""
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    return loaders


def collect_inputs(loader: Iterable[Any], input_fn: Callable[[Any], Any], num_batches: int
                   ) -> list[tuple[Any, ...]]:
    """``as_args(input_fn(batch))`` of the first ``num_batches`` batches, detached on the CPU."""
    batches: list[tuple[Any, ...]] = []
    for batch in loader:
        batches.append(detach_cpu(as_args(input_fn(batch))))
        if len(batches) >= num_batches:
            break
    if not batches:
        raise ValueError("the calibration dataloader yielded no batch")
    return batches
