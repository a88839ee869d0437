"""Top-1 accuracy of a classifier over a DataLoader."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["evaluate_accuracy", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a stateless model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _set_mode(model: nn.Module, training: bool) -> None:
    """Switch train/eval mode, tolerating modules that refuse it (e.g. exported programs)."""
    with contextlib.suppress(NotImplementedError, RuntimeError):
        model.train(training)


def evaluate_accuracy(
    model: nn.Module,
    loader: Iterable[Sequence[Tensor]],
    *,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> float:
    """Top-1 accuracy in percent of ``model`` on ``(images, labels)`` batches.

    The model runs in eval mode under ``torch.no_grad()``; its previous train/eval mode is
    restored afterwards. Inputs go to ``device`` (default: the model's own device).
    """
    target = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    _set_mode(model, False)
    correct = 0
    seen = 0
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc="eval", unit="batch", disable=not progress):
                images, labels = batch[0], batch[1]
                logits = model(images.to(target))
                predicted = logits.argmax(dim=1).cpu()
                correct += int((predicted == labels.cpu()).sum().item())
                seen += int(labels.numel())
    finally:
        _set_mode(model, was_training)
    if seen == 0:
        raise ValueError("cannot compute accuracy: the loader yielded no samples")
    return 100.0 * correct / seen
