"""The callback's settings as one frozen, validated :class:`CalibrationConfig`.

``REQuantCalibration(attr, config=None, **options)`` builds its config here: ``options`` are
field names applied over ``config`` (or the defaults) with :func:`dataclasses.replace`, so what
a user writes always wins; ``granularity=PerTensor()|PerChannel(0)`` is accepted as another
spelling of ``per_channel`` (translated in :meth:`CalibrationConfig.with_options`, the one place).
The callback exposes every field as a read/write attribute (:class:`ConfigAttributes`); a write
replaces the frozen config with a validated copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from torch import Tensor

from ..options import MAX_BITS, MIN_BITS, Granularity, PerChannel, PerTensor, Space, check_bits, granularity
from .batches import default_input_fn, default_target_fn

__all__ = ["MODES", "CalibrationConfig", "ConfigAttributes", "settings_record"]

#: ``"weights"``: weights-only REQuant (no data); ``"fx"``: torch.ao FX PTQ; ``"pt2e"``: torchao pt2e PTQ.
MODES = ("weights", "fx", "pt2e")
_DATALOADERS = ("train", "val")


@dataclass(frozen=True)
class CalibrationConfig:
    """What ``REQuantCalibration`` quantizes and when; every field is validated at construction.

    Attributes:
        mode: one of :data:`MODES`: ``"weights"`` (``quantize_weights``, no data), ``"fx"``
            (``prepare_fx`` -> ``num_batches`` batches -> ``convert_fx``) or ``"pt2e"``
            (``torch.export`` + ``prepare_pt2e`` -> batches -> ``convert_pt2e``).
        weight_bits, act_bits: integers in ``[2, 8]``; ``act_bits`` is unused in ``"weights"`` mode.
        space: weight grid ``"sqrt"`` (``T(w) = sign(w)|w|^p``) or ``"uniform"``; ``None``: the
            ``quantize_kwargs`` recipe's, else ``"sqrt"`` (also for ``export_onnx``).
        per_channel: one range per output channel (``True``) or per tensor; ``None`` as for ``space``.
        quantize_kwargs: further :func:`requant_plugin.quantize_weights` options (``"weights"`` mode).
        qconfig_mapping: FX ``QConfigMapping`` (``"fx"`` only); ``None``: REQuant's, else torch's x86.
        quantizer: pt2e ``Quantizer`` (``"pt2e"`` only); ``None``: REQuant's, else torchao's x86.
        num_batches: calibration batches (per rank under DDP), ``>= 1``.
        dataloader: ``"train"``, ``"val"`` or any iterable of batches.
        input_fn: ``batch -> input`` (a tensor or a tuple of positional args).
        target_fn: ``batch -> int labels or None`` for the test-time accuracy comparison.
        calibrate_after_fit: calibrate in ``on_fit_end``.
        test_quantized: swap the quantized submodule in for ``trainer.test``.
        compare_float: during ``trainer.test`` also log FP32-vs-quantized accuracy, agreement, SQNR.
        export_onnx: path of a TensorRT Q/DQ ONNX model written after an FX/pt2e calibration.
        export_kwargs: more ``export_onnx_qdq`` keyword arguments (``opset``, ``fp16``, ...).
        progress: tqdm bar while calibrating (when the trainer's bar is on, global rank 0).
        verbose: print the per-layer summary table after calibration (global rank 0).
    """

    mode: str = "fx"
    weight_bits: int = 8
    act_bits: int = 8
    space: str | None = None
    per_channel: bool | None = None
    quantize_kwargs: Mapping[str, Any] = field(default_factory=dict)
    qconfig_mapping: Any = None
    quantizer: Any = None
    num_batches: int = 8
    dataloader: str | Iterable[Any] = "train"
    input_fn: Callable[[Any], Any] = default_input_fn
    target_fn: Callable[[Any], Tensor | None] = default_target_fn
    calibrate_after_fit: bool = True
    test_quantized: bool = True
    compare_float: bool = True
    export_onnx: str | None = None
    export_kwargs: Mapping[str, Any] = field(default_factory=dict)
    progress: bool = True
    verbose: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("weight_bits", "act_bits"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, check_bits(value))
            except ValueError:
                raise ValueError(f"{name} must be an int in [{MIN_BITS}, {MAX_BITS}], got {value!r}") from None
        if self.num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {self.num_batches}")
        if isinstance(self.dataloader, str) and self.dataloader not in _DATALOADERS:
            raise ValueError(f"dataloader must be 'train', 'val' or an iterable, got {self.dataloader!r}")
        if self.space is not None:
            object.__setattr__(self, "space", Space.parse(self.space).value)
        if self.mode != "fx" and self.qconfig_mapping is not None:
            raise ValueError("qconfig_mapping is for mode='fx'; use quantizer= for mode='pt2e'")
        if self.mode != "pt2e" and self.quantizer is not None:
            raise ValueError("quantizer is for mode='pt2e'; use qconfig_mapping= for mode='fx'")
        if self.mode == "weights" and self.export_onnx is not None:
            raise ValueError("export_onnx needs calibration data: use mode='fx' or 'pt2e' (the "
                             "export calibrates activations on the same batches)")
        object.__setattr__(self, "quantize_kwargs", dict(self.quantize_kwargs or {}))
        object.__setattr__(self, "export_kwargs", dict(self.export_kwargs or {}))

    def with_options(self, **options: Any) -> CalibrationConfig:
        """This config with ``options`` (field names, or ``granularity``) replaced; validated."""
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(self)} - {"granularity"})
        if unknown:
            raise TypeError(f"REQuantCalibration got unknown option(s) {unknown}; valid options are "
                            f"the CalibrationConfig fields {[f.name for f in dataclasses.fields(self)]}")
        if "granularity" in options:
            options["per_channel"] = _per_channel(options.pop("granularity"))
        return dataclasses.replace(self, **options) if options else self

    @property
    def granularity(self) -> Granularity | None:
        """``per_channel`` as a type: ``PerChannel(0)``, ``PerTensor()`` or ``None`` (the default's)."""
        return None if self.per_channel is None else granularity(self.per_channel, 0)

    def weight_grid(self) -> dict[str, Any]:
        """``space``/``per_channel`` as written, else the callback's defaults (``"sqrt"``, per channel),
        except that with a ``quantize_kwargs`` recipe an unwritten one is ``None`` (the recipe's)."""
        recipe = "recipe" in self.quantize_kwargs
        return {"space": self.space if self.space is not None or recipe else "sqrt",
                "per_channel": self.per_channel if self.per_channel is not None or recipe else True}


def _per_channel(value: Any) -> bool | None:
    if value is None or isinstance(value, PerTensor):
        return None if value is None else False
    if isinstance(value, PerChannel) and value.axis == 0:
        return True
    raise ValueError(f"granularity must be PerTensor(), PerChannel(0) or None, got {value!r} (the "
                     "callback quantizes output channels, axis 0)")


def settings_record(config: CalibrationConfig, attr: str | None, observers: str) -> dict[str, Any]:
    """The settings a calibration state was made with (``state_dict()["config"]``, plain values).

    ``attr``: the submodule actually quantized (``""`` = the LightningModule's forward);
    ``observers``: ``"default"``, ``"custom"`` or the default mapping/quantizer's name.
    """
    record: dict[str, Any] = {"mode": config.mode, "attr": attr, "weight_bits": config.weight_bits,
                              "observers": observers}
    if config.mode == "weights":
        record.update(**config.weight_grid(),
                      quantize_kwargs={k: v for k, v in sorted(config.quantize_kwargs.items())
                                       if isinstance(v, (bool, int, float, str))})
    else:
        record["act_bits"] = config.act_bits
    return record


_T = TypeVar("_T")


class _Setting(Generic[_T]):
    """A :class:`CalibrationConfig` field read and written as an attribute of the callback."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Setting[_T]: ...
    @overload
    def __get__(self, obj: ConfigAttributes, owner: type | None = None) -> _T: ...
    def __get__(self, obj: ConfigAttributes | None, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj.config, self.name)

    def __set__(self, obj: ConfigAttributes, value: _T) -> None:
        obj.config = obj.config.with_options(**{self.name: value})


class ConfigAttributes:
    """``callback.<field>`` reads ``callback.config.<field>``; assigning it replaces the config."""

    config: CalibrationConfig
    mode: _Setting[str] = _Setting()
    weight_bits: _Setting[int] = _Setting()
    act_bits: _Setting[int] = _Setting()
    space: _Setting[str | None] = _Setting()
    per_channel: _Setting[bool | None] = _Setting()
    quantize_kwargs: _Setting[Mapping[str, Any]] = _Setting()
    qconfig_mapping: _Setting[Any] = _Setting()
    quantizer: _Setting[Any] = _Setting()
    num_batches: _Setting[int] = _Setting()
    dataloader: _Setting[str | Iterable[Any]] = _Setting()
    input_fn: _Setting[Callable[[Any], Any]] = _Setting()
    target_fn: _Setting[Callable[[Any], Tensor | None]] = _Setting()
    calibrate_after_fit: _Setting[bool] = _Setting()
    test_quantized: _Setting[bool] = _Setting()
    compare_float: _Setting[bool] = _Setting()
    export_onnx: _Setting[str | None] = _Setting()
    export_kwargs: _Setting[Mapping[str, Any]] = _Setting()
    progress: _Setting[bool] = _Setting()
    verbose: _Setting[bool] = _Setting()
