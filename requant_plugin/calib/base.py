"""The calibrator contract above :mod:`requant_plugin.core`: ``collect`` -> ``compute_range`` -> ``reset``.

A calibrator turns observed tensors into the range a quantizer uses. It keeps its statistics
as tensors in a ``buffers`` mapping under fixed names: a plain ``dict`` when used alone (the
ONNX export), or the ``_buffers`` of the observer module that holds it (torch.ao FX, torchao
pt2e), so ``state_dict``, ``load_state_dict`` and ``.to(device)`` carry the statistics with no
copy. The observers are thin adapters: torch's observer base class for the qparams rules, a
calibrator for the statistics. ``merge(other)`` adds another calibrator's statistics (DDP ranks).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import MutableMapping
from typing import Any, Generic, NamedTuple, TypeVar

import torch
from torch import Tensor

__all__ = ["Buffers", "Calibrator", "ClipRange", "check_float", "set_buffer", "tensor_key"]

R = TypeVar("R")
#: where a calibrator keeps its tensors: a plain dict, or an observer module's ``_buffers``
Buffers = MutableMapping[str, Any]


class ClipRange(NamedTuple):
    """A chosen clipping range ``[lo, hi]`` (per tensor: 0-d or 1-element; per channel: one per row)."""

    lo: Tensor
    hi: Tensor


class Calibrator(ABC, Generic[R]):
    """``collect(x)`` per observed tensor, ``compute_range()`` (``None`` before data), ``reset()``."""

    #: buffers that start empty and take their size from the data (resized before a state load)
    resizable: tuple[str, ...] = ()

    def __init__(self, buffers: Buffers | None = None) -> None:
        self.buffers: Buffers = {} if buffers is None else buffers

    @abstractmethod
    def collect(self, x: Tensor) -> None:
        """Add a tensor's statistics (the tensor is not modified)."""

    @abstractmethod
    def compute_range(self) -> R | None:
        """The range chosen from everything collected; ``None`` before any data."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every statistic."""

    def invalidate(self) -> None:
        """Forget caches derived from the buffers (called when a state is loaded into them)."""

    def merge(self, other: Calibrator[Any]) -> None:
        """Add ``other``'s statistics (another process's); calibrators without a rule refuse."""
        raise TypeError(f"{type(self).__name__} has no merge rule (merge {type(other).__name__} by rank 0)")

    def set_buffer(self, name: str, value: Tensor) -> None:
        """Copy ``value`` into the buffer ``name`` in place (resized, its device and dtype kept)."""
        set_buffer(self.buffers[name], value)


def set_buffer(buf: Tensor, value: Tensor) -> None:
    """``buf[...] = value`` in place, resizing ``buf`` to ``value``'s shape first."""
    value = value.to(device=buf.device, dtype=buf.dtype)
    if buf.shape != value.shape:
        buf.resize_(value.shape)
    buf.copy_(value)


def check_float(x: Tensor, who: str) -> None:
    """``TypeError`` unless ``x`` is a floating-point tensor."""
    if not x.is_floating_point():
        raise TypeError(f"{who} observes floating-point tensors, got dtype {x.dtype}")


def tensor_key(x: Tensor) -> tuple[Any, ...]:
    """Identity of a weight tensor's current contents: storage, offset, shape, strides, dtype,
    device, version counter and a float64 checksum (the checksum guards against a new tensor
    reusing a freed one's memory). Weight calibrators skip tensors whose key they have seen."""
    try:
        version: int | None = x._version
    except RuntimeError:  # inference tensors carry no version counter
        version = None
    with torch.no_grad():
        checksum = float(x.detach().double().sum()) if x.numel() else 0.0
    return (x.data_ptr(), x.storage_offset(), tuple(x.shape), tuple(x.stride()), x.dtype,
            str(x.device), version, checksum)
