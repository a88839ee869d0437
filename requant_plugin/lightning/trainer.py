"""What the callback asks of a (duck-typed) Lightning trainer: strategy, rank, progress bar,
DDP state and the train/val dataloader to calibrate on. ``trainer`` may be ``None`` (explicit
``calibrate(None, ...)``): a single process, global rank 0, no loggers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .batches import first_loader

__all__ = [
    "calibration_loader", "check_strategy", "check_test_data", "check_val_for_fit", "data_source",
    "distributed", "is_global_zero", "progress_enabled", "source_defined",
]

_UNSUPPORTED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")
_SUPPORTED_STRATEGIES = ("SingleDeviceStrategy", "DDPStrategy")


def distributed(trainer: Any) -> bool:
    """True inside an initialised process group of more than one rank (and a trainer that agrees)."""
    if trainer is not None and int(getattr(trainer, "world_size", 1)) <= 1:
        return False
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def is_global_zero(trainer: Any) -> bool:
    """True on global rank 0 (and without a trainer)."""
    return trainer is None or bool(getattr(trainer, "is_global_zero", True))


def progress_enabled(trainer: Any) -> bool:
    """True when the trainer shows a progress bar on this (global rank 0) process."""
    if trainer is None:
        return True
    bar = getattr(trainer, "progress_bar_callback", None)
    return bar is not None and bool(getattr(bar, "is_enabled", False)) and is_global_zero(trainer)


def data_source(trainer: Any, which: str) -> Any:
    """Lightning's record of where the train/val dataloader comes from (None if unknown)."""
    fit_loop = getattr(trainer, "fit_loop", None)
    if fit_loop is None:
        return None
    if which == "train":
        return getattr(fit_loop, "_data_source", None)
    return getattr(getattr(getattr(fit_loop, "epoch_loop", None), "val_loop", None), "_data_source", None)


def source_defined(source: Any) -> bool:
    """True when a data source record names an object that defines its dataloader method."""
    if getattr(source, "instance", None) is None:
        return False
    try:
        return bool(source.is_defined())
    except Exception:
        return True


def check_strategy(trainer: Any) -> None:
    """Raise for strategies that shard the float submodule or calibrate in worker processes."""
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


def check_val_for_fit(trainer: Any) -> None:
    """Raise in ``setup("fit")`` when ``dataloader='val'`` is asked for and this fit has none."""
    source = data_source(trainer, "val")
    if source is not None and not source_defined(source):
        raise ValueError(
            "REQuantCalibration(dataloader='val') but this fit has no val dataloader; pass "
            "val_dataloaders=..., define val_dataloader(), or use dataloader='train'"
        )


def check_test_data(trainer: Any, which: str) -> None:
    """Raise before testing when there is no ``which`` dataloader to calibrate on."""
    source = data_source(trainer, which)
    if source is None or not source_defined(source):
        raise ValueError(
            f"REQuantCalibration has no calibration state and trainer.test has no "
            f"{which} dataloader to calibrate on: run trainer.fit first, pass "
            "ckpt_path= of a checkpoint saved after calibration, give the datamodule a "
            f"{which}_dataloader(), or pass REQuantCalibration(dataloader=<iterable>)"
        )


def calibration_loader(trainer: Any, which: str | Iterable[Any]) -> Iterable[Any]:
    """The loader to calibrate on: ``which`` itself when an iterable, else the trainer's
    ``"train"``/``"val"`` loader (the live one, else built from its data source)."""
    if not isinstance(which, str):
        return which
    if trainer is None:
        raise ValueError("calibrate(trainer=None, ...) needs a dataloader argument")
    live = trainer.train_dataloader if which == "train" else trainer.val_dataloaders
    loader = first_loader(live) if live is not None else None
    if loader is None:
        source = data_source(trainer, which)
        if source is not None and source_defined(source):
            try:
                loader = first_loader(source.dataloader())
            except Exception as exc:
                raise RuntimeError(
                    f"REQuantCalibration could not get the {which} dataloader "
                    f"({type(exc).__name__}: {exc}); pass REQuantCalibration(dataloader=<iterable>)"
                ) from exc
    if loader is None:
        raise ValueError(
            f"REQuantCalibration needs a {which} dataloader to calibrate; pass "
            "REQuantCalibration(dataloader=<iterable>) or attach one to the trainer"
        )
    return loader  # type: ignore[no-any-return]
