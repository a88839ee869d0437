"""What users pass as calibration data, turned into validated model inputs.

``calibration_data`` is a Tensor (one batch) or an iterable of Tensors or of ``(x, y, ...)``
tuples (a DataLoader); the first element of each is the model input. Inputs must be finite and
floating point, except for models that take indices (an ``nn.Embedding`` / ``nn.EmbeddingBag``
inside): their token or category ids reach the layers as float embeddings.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "calibration_inputs", "check_calibration_batches", "check_one_input", "iter_calibration_inputs", "takes_indices",
]


def iter_calibration_inputs(data: Any) -> Iterator[Tensor]:
    """Yield input tensors from ``data``: a Tensor (one batch), or an iterable of Tensors or of
    ``(x, y, ...)`` tuples/lists (the first element is the input), e.g. a DataLoader."""
    if isinstance(data, Tensor):
        yield data
        return
    if not isinstance(data, Iterable):
        raise TypeError(
            f"calibration_data must be a Tensor or an iterable of batches, got {type(data).__name__}"
        )
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, Tensor):
            raise TypeError(
                "each calibration batch must be an input Tensor or an (x, y) tuple whose first "
                f"element is a Tensor, got {type(x).__name__}"
            )
        yield x


def takes_indices(model: nn.Module) -> bool:
    """Whether ``model`` holds an embedding table, so that integer inputs (ids) are legitimate."""
    return any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules())


def check_calibration_batches(batches: Sequence[Tensor], *, integer_ok: bool = False) -> None:
    """Refuse calibration batches the statistics cannot use: NaN/Inf values, and non-floating
    dtypes (an integer image is not the float input the model was trained on) unless
    ``integer_ok`` (models that look up ids: :func:`takes_indices`)."""
    for i, x in enumerate(batches):
        if not x.is_floating_point():
            if integer_ok and not x.is_complex() and x.dtype is not torch.bool:
                continue
            raise TypeError(
                f"calibration batch {i} has dtype {x.dtype}: the layer statistics need the float "
                "inputs the model sees; convert first (for example x.float() / 255 plus the model's "
                "normalisation for uint8 images, or x.float() for integer features)"
            )
        if not bool(torch.isfinite(x.detach()).all()):
            bad = int((~torch.isfinite(x.detach())).sum())
            raise ValueError(
                f"calibration batch {i} has {bad} NaN/Inf values: REQuant needs finite calibration "
                "inputs (drop or fix those samples)"
            )


def check_one_input(model: nn.Module) -> None:
    """Refuse a model whose ``forward`` needs more than one argument: the calibration runs ``model(x)``."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin or C forward): let the call decide
        return
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    required = [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]
    if len(required) > 1:
        raise ValueError(
            f"{type(model).__name__}.forward needs {len(required)} inputs ({', '.join(required)}), but the calibration "
            "feeds each batch as model(x): wrap the model in a module whose forward(x) calls it with the other "
            "inputs fixed, and quantize that"
        )


def calibration_inputs(data: Any, model: nn.Module, *, min_batches: int = 1) -> list[Tensor]:
    """The batches of ``data`` (:func:`iter_calibration_inputs`) for ``model``, at least one, each
    checked by :func:`check_calibration_batches` (integer ids allowed where ``model`` embeds them);
    ``model`` must take one input (:func:`check_one_input`). A single batch of two or more samples is split
    into two halves where ``min_batches = 2`` (the folds of the cross-validated target damp; one sample: a
    warning)."""
    check_one_input(model)
    batches = list(iter_calibration_inputs(data))
    if not batches:
        raise ValueError("calibration_data yielded no batch")
    check_calibration_batches(batches, integer_ok=takes_indices(model))
    if len(batches) < min_batches and batches[0].shape[0] >= 2:
        half = batches[0].shape[0] // 2
        batches = [batches[0][:half], batches[0][half:]]
    elif len(batches) < min_batches:
        warnings.warn("calibration_data is a single sample: the target damp cannot be cross-validated, every layer "
                      "takes the first of target_damp's candidates; give two or more samples", stacklevel=3)
    return batches
