"""``REQuantCalibration``: post-training quantization of one submodule of a LightningModule,
as a callback. This module holds the hooks and the calibration state; the work is done beside it
(:mod:`.calibration`, :mod:`.flows`, :mod:`.merge`, :mod:`.network`, :mod:`.metrics`,
:mod:`.summary`, :mod:`.trainer`), and it never imports ``lightning`` or ``pytorch_lightning``:
:func:`bind` mixes in either flavour's ``Callback`` base.

What the callback does, and what it never does:

* It quantizes a COPY of one float submodule (``attr``, or the one found by
  :func:`.network.find_network`) and keeps it on the callback. ``pl_module`` is never converted,
  checkpoints stay float; during ``trainer.test`` only, the quantized copy stands in for the
  submodule (or for the LightningModule's ``forward``) and the float one is put back afterwards.
* Modes: ``"weights"`` (:func:`requant_plugin.quantize_weights`, no data), ``"fx"`` / ``"pt2e"``
  (``num_batches`` calibration batches through the observers, then convert).
* Triggers: ``on_fit_end``, ``on_test_start`` (also logs ``requant/fp32_acc``,
  ``requant/quant_acc``, ``requant/top1_agreement``, ``requant/sqnr_db`` on the same test
  batches) and an explicit :meth:`REQuantCalibrationCore.calibrate`.
* State: ``state_dict()`` is ``weights_only``-safe (see :mod:`.calibration`); in a fresh process
  it plus the float weights of the same checkpoint rebuild the quantized module without data.
* DDP (``strategy="ddp"``): per-rank observer states are all-gathered and merged in rank order
  (:mod:`.merge`), so every rank ends with identical ranges.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .batches import as_args, collect_inputs, first_tensor
from .calibration import (
    STATE_VERSION,
    calibrate_observers,
    empty_stats,
    example_inputs,
    export_fn,
    export_onnx,
    new_state,
    quantize_weights_only,
)
from .config import CalibrationConfig, ConfigAttributes, settings_record
from .flows import make_flow, observer_source, rebuild
from .metrics import Comparison
from .modules import QuantizedModule, float_state, module_device, plain_copy, weights_fingerprint
from .network import QuantizedStandIn, resolve_target
from .summary import format_summary, report
from .trainer import (
    calibration_loader,
    check_strategy,
    check_test_data,
    check_val_for_fit,
    is_global_zero,
    progress_enabled,
)

__all__ = ["REQuantCalibrationCore", "bind"]

log = logging.getLogger("requant_plugin.lightning")


class REQuantCalibrationCore(ConfigAttributes):
    """Post-training quantization of one submodule of a LightningModule, as a callback.

    Args:
        attr: dotted name of the float submodule to quantize (``pl_module.get_submodule(attr)``),
            e.g. ``"model"``. ``None`` (default) finds it: the one child module that holds
            Conv/Linear layers, or the LightningModule's own ``forward`` when those layers are its
            direct children; two or more candidate children raise in ``setup``, listing them.
        config: a :class:`~requant_plugin.lightning.config.CalibrationConfig` (default: its defaults).
        **options: :class:`CalibrationConfig` fields (``mode``, ``weight_bits``, ``act_bits``,
            ``space``, ``per_channel`` or ``granularity``, ``quantize_kwargs``, ``qconfig_mapping``,
            ``quantizer``, ``num_batches``, ``dataloader``, ``input_fn``, ``target_fn``,
            ``calibrate_after_fit``, ``test_quantized``, ``compare_float``, ``export_onnx``,
            ``export_kwargs``, ``progress``, ``verbose``) applied over ``config``; each is also a
            read/write attribute of the callback.
    """

    def __init__(self, attr: str | None = None, config: CalibrationConfig | None = None,
                 **options: Any) -> None:
        if attr is not None and (not isinstance(attr, str) or not attr):
            raise ValueError("attr must name a submodule of the LightningModule, e.g. attr='model'")
        if config is not None and not isinstance(config, CalibrationConfig):
            raise TypeError(f"config must be a CalibrationConfig, got {type(config).__name__}; pass "
                            "the settings as keywords, e.g. REQuantCalibration('model', mode='fx')")
        self.config = (config or CalibrationConfig()).with_options(**options)
        self.attr = attr
        self._target_attr: str | None = attr  # "" = the LightningModule's own forward
        self._target_name = attr or ""
        self.export_report: Any = None
        self._state: dict[str, Any] = {}
        self._quantized: nn.Module | None = None
        self._quantized_fp: str | None = None
        self._swap: QuantizedStandIn | None = None
        self._compare: Comparison | None = None
        super().__init__()

    # ------------------------------------------------------------------ public

    @property
    def quantized_model(self) -> QuantizedModule | None:
        """The quantized copy of the submodule, or ``None`` before calibration.

        A :class:`QuantizedModule`: callable from any device (FX/pt2e kernels run on the CPU) and
        under ``Trainer(deterministic=True)``; ``.module`` is the converted ``GraphModule`` (or,
        in ``"weights"`` mode, the float model with quantized weights).
        """
        if self._quantized is None:
            return None
        return QuantizedModule(self._quantized, None if self.config.mode == "weights" else "cpu")

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

        ``"weights"`` mode needs no data. FX/pt2e modes run ``num_batches`` batches of
        ``dataloader`` (argument, else the configured one) through the observers, merged across
        ranks under DDP. The summary goes to the trainer's loggers (global rank 0) and the ONNX
        export runs when configured. ``trainer`` may be ``None`` with a dataloader (or in
        ``"weights"`` mode). The result is also :attr:`quantized_model`.
        """
        cfg = self.config
        float_module = self._target(pl_module)
        show = cfg.progress and progress_enabled(trainer)
        t0 = time.perf_counter()
        with torch.inference_mode(False), torch.no_grad():
            state = float_state(float_module, trainer)
            source = plain_copy(float_module, state)
            if cfg.mode == "weights":
                quantized, rows = quantize_weights_only(source, cfg, show)
                quantized.to(module_device(float_module))
                stats, batches = empty_stats(), []
            else:
                loader = dataloader if dataloader is not None else calibration_loader(trainer, cfg.dataloader)
                batches = collect_inputs(loader, cfg.input_fn, cfg.num_batches)
                flow = make_flow(cfg)
                assert flow is not None
                quantized, rows, stats = calibrate_observers(flow, source, batches, trainer, show)
        seconds = time.perf_counter() - t0
        self._quantized, self._quantized_fp = quantized, weights_fingerprint(state)
        self._state = new_state(self._record(), self._quantized_fp, rows, stats, seconds)
        report(trainer, self._state, cfg.mode, self._target_name, cfg.verbose)
        if cfg.export_onnx is not None and is_global_zero(trainer):
            self.export_report = export_onnx(cfg, plain_copy(float_module, state), batches)
            log.info("REQuantCalibration: wrote %s", cfg.export_onnx)
        out = self.quantized_model
        assert out is not None
        return out

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        """Validate the configuration; raises with the fix for anything it cannot support."""
        cfg = self.config
        check_strategy(trainer)
        self._target(pl_module)
        make_flow(cfg)
        if cfg.export_onnx is not None:
            export_fn()
        stage = str(getattr(stage, "value", stage))
        if cfg.mode == "weights" or not isinstance(cfg.dataloader, str):
            return
        if stage == "fit" and cfg.calibrate_after_fit and cfg.dataloader == "val":
            check_val_for_fit(trainer)
        # trainer.test with nothing to calibrate on is checked in on_test_start: Lightning restores
        # a ckpt_path= checkpoint (and this callback's state) only after setup

    def on_fit_end(self, trainer: Any, pl_module: nn.Module) -> None:
        """Calibrate after training (``pl_module.log`` is not allowed here: loggers are used)."""
        if self.config.calibrate_after_fit:
            self.calibrate(trainer, pl_module)

    def on_test_start(self, trainer: Any, pl_module: nn.Module) -> None:
        """Swap the quantized submodule in (building or calibrating it first when needed)."""
        cfg = self.config
        if not cfg.test_quantized:
            return
        if cfg.mode != "weights" and isinstance(cfg.dataloader, str) and not self.calibrated:
            check_test_data(trainer, cfg.dataloader)  # after any checkpoint restore
        float_module = self._target(pl_module)
        self._ensure_quantized(trainer, pl_module, float_module)
        assert self._quantized is not None
        runner = QuantizedModule(self._quantized, None if cfg.mode == "weights" else "cpu",
                                 remember_last=cfg.compare_float)
        if cfg.mode == "weights":
            runner.to(module_device(float_module))
        self._swap = QuantizedStandIn(pl_module, self._target_attr or "", runner)
        self._compare = Comparison()

    def on_validation_start(self, trainer: Any, pl_module: nn.Module) -> None:
        """In ``trainer.validate``: rebuild :attr:`quantized_model` from a restored calibration."""
        self._rebuild_restored(trainer, pl_module)

    def on_predict_start(self, trainer: Any, pl_module: nn.Module) -> None:
        """In ``trainer.predict``: rebuild :attr:`quantized_model` from a restored calibration."""
        self._rebuild_restored(trainer, pl_module)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate FP32-vs-quantized accuracy, top-1 agreement and SQNR on this batch."""
        swap, cfg = self._swap, self.config
        if swap is None or not cfg.compare_float or self._compare is None:
            return
        args = as_args(cfg.input_fn(batch))
        runner = swap.runner
        q_all = runner.last_output_for(args) if isinstance(runner, QuantizedModule) else None
        q_out = first_tensor(q_all if q_all is not None else runner(*args))
        f_out = first_tensor(swap.float_forward(*args))
        self._compare.update(f_out, q_out, lambda: cfg.target_fn(batch))

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Log the comparison metrics (summed over ranks, so exact under DDP)."""
        if self._swap is None or not self.config.compare_float or self._compare is None:
            return
        for k, v in self._compare.metrics(trainer).items():
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
            return {"version": STATE_VERSION, "calibrated": False, "config": self._record()}
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

    def _record(self) -> dict[str, Any]:
        """The settings record a state must match to be reused."""
        return settings_record(self.config, self._target_attr, observer_source(self.config))

    def _target(self, pl_module: nn.Module) -> nn.Module:
        """The float module to quantize (the swapped-out one while the stand-in is in place)."""
        if self._swap is not None:
            return self._swap.float_module
        target = resolve_target(pl_module, self.attr)
        self._target_attr, self._target_name = target.attr, target.name
        return target.module

    def _state_valid(self, fp: str) -> bool:
        return (self.calibrated and self._state.get("fingerprint") == fp
                and self._state.get("config") == self._record())

    def _ensure_quantized(self, trainer: Any, pl_module: nn.Module, float_module: nn.Module) -> None:
        """Make the quantized copy match the current float weights and settings: reuse it when the
        fingerprint matches, rebuild it from a loaded state (no data), else calibrate on the
        configured dataloader or raise saying why there is nothing to use."""
        with torch.inference_mode(False):
            state = float_state(float_module, trainer)
        fp = weights_fingerprint(state)
        if self._quantized is not None and self._quantized_fp == fp and self._state_valid(fp):
            return
        if self.config.mode == "weights":
            self.calibrate(trainer, pl_module)
            return
        if self._state_valid(fp):
            with torch.inference_mode(False):
                source = plain_copy(float_module, state)
            flow = make_flow(self.config)
            assert flow is not None
            self._quantized = rebuild(flow, source, example_inputs(self._state),
                                      self._state["observer_state"])
            self._quantized_fp = fp
            report(trainer, self._state, self.config.mode, self._target_name, self.config.verbose)
            return
        why = "no calibration yet"
        if self.calibrated:
            why = ("the float weights changed since calibration" if self._state.get("fingerprint") != fp
                   else "the callback settings differ from the calibration's")
        log.info("REQuantCalibration: calibrating before test (%s)", why)
        try:
            loader = calibration_loader(trainer, self.config.dataloader)
        except (ValueError, RuntimeError) as exc:
            raise RuntimeError(f"REQuantCalibration cannot quantize for trainer.test: {why}, and {exc}"
                               ) from exc
        self.calibrate(trainer, pl_module, loader)

    def _rebuild_restored(self, trainer: Any, pl_module: nn.Module) -> None:
        """Outside ``fit``, rebuild the quantized copy (no data) from a calibration state that
        fits the current float weights, e.g. one restored from ``ckpt_path=``; else do nothing."""
        fn = getattr(getattr(trainer, "state", None), "fn", None)
        if str(getattr(fn, "value", fn)) not in ("validate", "predict") or not self.calibrated:
            return
        float_module = self._target(pl_module)
        with torch.inference_mode(False):
            fp = weights_fingerprint(float_state(float_module, trainer))
        if self._state_valid(fp):
            self._ensure_quantized(trainer, pl_module, float_module)

    def _restore(self) -> None:
        if self._swap is not None:
            self._swap.restore()
            self._swap = None


def bind(callback_base: type, module: str) -> type[REQuantCalibrationCore]:
    """``REQuantCalibration`` of one Lightning flavour: the core with ``callback_base`` (that
    flavour's ``Callback``) mixed in, named so that both flavours share the checkpoint key
    ``"REQuantCalibration"`` and pickle by ``module``'s attribute."""
    doc = (f"Post-training quantization callback for ``{callback_base.__module__.split('.')[0]}`` "
           "(see :class:`requant_plugin.lightning.callback.REQuantCalibrationCore` for the arguments).")
    namespace = {"__module__": module, "__qualname__": "REQuantCalibration", "__doc__": doc}
    return type("REQuantCalibration", (REQuantCalibrationCore, callback_base), namespace)
