"""Lightning-free logic of the ``REQuantCalibration`` callback (PTQ through one callback).

This module never imports ``lightning`` or ``pytorch_lightning``: :class:`REQuantCalibrationCore`
only uses the hook names and duck-typed ``trainer`` attributes that both flavours share, and
``requant_plugin.lightning`` / ``requant_plugin.pytorch_lightning`` each add one thin subclass
that mixes in their own ``Callback`` base.

What the callback does, and what it never does:

* It quantizes a COPY of one float submodule of the LightningModule (``attr``, e.g. ``"model"``;
  by default the one child holding the Conv/Linear layers, or the LightningModule's own
  ``forward`` when the layers sit on it directly)
  and keeps the quantized module on the callback. ``pl_module`` is never converted, checkpoints
  stay float and load into a plain module; its ``forward`` is replaced only when it is the
  target itself, and only during ``trainer.test`` (an instance attribute, removed afterwards).
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

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ._lightning_batches import _as_args, _detach_cpu, _first_loader, _first_tensor, default_input_fn, default_target_fn
from ._lightning_flows import _OBS, _FXFlow, _observers, _PT2EFlow
from ._lightning_merge import _distributed, _sync_observers
from ._lightning_merge import _merge_histograms as _merge_histograms  # re-exported for tests
from ._lightning_modules import QuantizedModule, _float_state, _module_device, _plain_copy, weights_fingerprint
from ._lightning_summary import _PER_CHANNEL, _fx_weight_rows, _observer_row, _summary_metrics, format_summary

__all__ = [
    "MODES", "QuantizedModule", "REQuantCalibrationCore", "default_input_fn", "default_target_fn",
    "format_summary", "weights_fingerprint",
]

log = logging.getLogger("requant_plugin.lightning")

MODES = ("weights", "fx", "pt2e")
STATE_VERSION = 1
_SAMPLE_CAP = 1 << 16
_UNSUPPORTED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")
_SUPPORTED_STRATEGIES = ("SingleDeviceStrategy", "DDPStrategy")


# --------------------------------------------------------------------------- the callback


class REQuantCalibrationCore:
    """Post-training quantization of one submodule of a LightningModule, as a callback.

    Args:
        attr: dotted name of the float submodule to quantize (``pl_module.get_submodule(attr)``),
            e.g. ``"model"``. ``None`` (default) finds it: the one child module that holds
            Conv/Linear layers, or the LightningModule's own ``forward`` when those layers are its
            direct children (alone or next to one such child); two or more children holding
            layers (e.g. a teacher and a student) raise in ``setup``, listing them. The summary
            names the module that was quantized.
        mode: ``"weights"`` (weights-only REQuant, no data), ``"fx"`` (torch.ao FX PTQ) or
            ``"pt2e"`` (torchao pt2e PTQ).
        weight_bits, act_bits: bit widths (``act_bits`` is ignored in ``"weights"`` mode). With
            a custom ``qconfig_mapping``/``quantizer`` the bits are whatever it says.
        space, per_channel: weight grid for ``"weights"`` mode (``"sqrt"`` = REQuant's power
            transform, ``"uniform"``) and per-channel ranges; ``None`` (default): the
            ``quantize_kwargs`` recipe's choice, else ``"sqrt"`` and per-channel (also for
            ``export_onnx``). ``quantize_kwargs`` passes any other
            :func:`requant_plugin.quantize_weights` option (``fold_bn``, ``p``, ``recipe``, ...);
            a value written here or there always wins over the recipe.
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
        attr: str | None = None,
        *,
        mode: str = "fx",
        weight_bits: int = 8,
        act_bits: int = 8,
        space: str | None = None,
        per_channel: bool | None = None,
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
        if attr is not None and (not isinstance(attr, str) or not attr):
            raise ValueError("attr must name a submodule of the LightningModule, e.g. attr='model'")
        for name, bits in (("weight_bits", weight_bits), ("act_bits", act_bits)):
            if not isinstance(bits, int) or not 2 <= bits <= 8:
                raise ValueError(f"{name} must be an int in [2, 8], got {bits!r}")
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        if isinstance(dataloader, str) and dataloader not in ("train", "val"):
            raise ValueError(f"dataloader must be 'train', 'val' or an iterable, got {dataloader!r}")
        if space is not None and space not in ("sqrt", "uniform"):
            raise ValueError(f"space must be 'sqrt' or 'uniform', got {space!r}")
        if mode != "fx" and qconfig_mapping is not None:
            raise ValueError("qconfig_mapping is for mode='fx'; use quantizer= for mode='pt2e'")
        if mode != "pt2e" and quantizer is not None:
            raise ValueError("quantizer is for mode='pt2e'; use qconfig_mapping= for mode='fx'")
        if mode == "weights" and export_onnx is not None:
            raise ValueError("export_onnx needs calibration data: use mode='fx' or 'pt2e' (the "
                             "export calibrates activations on the same batches)")
        self.attr = attr
        self._resolved_attr: str | None = attr  # "" = the LightningModule's own forward
        self._target_name = attr or ""
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
        # trainer.test with nothing to calibrate on is checked in on_test_start: Lightning restores
        # a ckpt_path= checkpoint (and this callback's state) only after setup

    def _check_test_data(self, trainer: Any) -> None:
        """Raise before testing when nothing is calibrated (after any checkpoint restore) and there
        is no dataloader to calibrate on."""
        if self.mode == "weights" or not isinstance(self.dataloader, str) or self.calibrated:
            return
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
        self._check_test_data(trainer)
        float_module = self._target(pl_module)
        self._ensure_quantized(trainer, pl_module, float_module)
        assert self._quantized is not None
        runner = QuantizedModule(self._quantized, None if self.mode == "weights" else "cpu",
                                 remember_last=self.compare_float)
        if self.mode == "weights":
            runner.to(_module_device(float_module))
        attr = self._resolved_attr or ""
        parent_name, _, child = attr.rpartition(".")
        parent = pl_module.get_submodule(parent_name) if parent_name else pl_module
        if attr:
            setattr(parent, child, runner)
        else:  # the LightningModule's own forward: an instance attribute, removed in _restore
            object.__setattr__(pl_module, "forward", runner)
        self._swapped = (parent, child, float_module)
        self._compare = dict.fromkeys(("n", "n_labeled", "fp32", "quant", "agree", "signal",
                                       "noise"), 0.0)

    def on_validation_start(self, trainer: Any, pl_module: nn.Module) -> None:
        """In ``trainer.validate``: rebuild :attr:`quantized_model` from a restored calibration."""
        self._rebuild_restored(trainer, pl_module)

    def on_predict_start(self, trainer: Any, pl_module: nn.Module) -> None:
        """In ``trainer.predict``: rebuild :attr:`quantized_model` from a restored calibration."""
        self._rebuild_restored(trainer, pl_module)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate FP32-vs-quantized accuracy, top-1 agreement and SQNR on this batch."""
        if self._swapped is None or not self.compare_float:
            return
        parent, child, float_module = self._swapped
        args = _as_args(self.input_fn(batch))
        runner = getattr(parent, child) if child else vars(parent)["forward"]
        q_all = runner.last_output_for(args) if isinstance(runner, QuantizedModule) else None
        q_out = _first_tensor(q_all if q_all is not None else runner(*args))
        f_out = _first_tensor(float_module(*args) if child
                              else type(float_module).forward(float_module, *args))
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
        cfg: dict[str, Any] = {"mode": self.mode, "attr": self._resolved_attr, "weight_bits": self.weight_bits,
                               "observers": observers}
        if self.mode == "weights":
            cfg.update(**self._weight_grid(),
                       quantize_kwargs={k: v for k, v in sorted(self.quantize_kwargs.items())
                                        if isinstance(v, (bool, int, float, str))})
        else:
            cfg["act_bits"] = self.act_bits
        return cfg

    def _target(self, pl_module: nn.Module) -> nn.Module:
        if self._swapped is not None:
            return self._swapped[2]
        if self.attr is None:
            self._resolved_attr = _find_network(pl_module)
            self._target_name = ".".join(
                [type(pl_module).__name__, self._resolved_attr or "forward (the LightningModule itself)"])
            return pl_module.get_submodule(self._resolved_attr)
        self._target_name = f"{type(pl_module).__name__}.{self.attr}"
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

    def _weight_grid(self) -> dict[str, Any]:
        """``space``/``per_channel`` as written, else the callback's defaults (``"sqrt"``, per channel),
        except that with a ``quantize_kwargs`` recipe an unwritten one is ``None`` (the recipe's)."""
        recipe = "recipe" in self.quantize_kwargs
        return {"space": self.space if self.space is not None or recipe else "sqrt",
                "per_channel": self.per_channel if self.per_channel is not None or recipe else True}

    def _quantize_weights(self, source: nn.Module, trainer: Any
                          ) -> tuple[nn.Module, list[dict[str, Any]]]:
        """Weights-only REQuant of ``source`` (a private plain copy), in place."""
        from .ptq import quantize_weights

        kwargs: dict[str, Any] = {"progress": self.progress and _progress_enabled(trainer)}
        kwargs.update({k: v for k, v in self._weight_grid().items() if v is not None})
        kwargs.update(self.quantize_kwargs)
        model, report = quantize_weights(source, self.weight_bits, inplace=True, **kwargs)
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

    def _rebuild_restored(self, trainer: Any, pl_module: nn.Module) -> None:
        """Outside ``fit``, rebuild the quantized copy (no data) from a calibration state that
        fits the current float weights, e.g. one restored from ``ckpt_path=``; else do nothing."""
        fn = getattr(getattr(trainer, "state", None), "fn", None)
        if str(getattr(fn, "value", fn)) not in ("validate", "predict") or not self.calibrated:
            return
        float_module = self._target(pl_module)
        with torch.inference_mode(False):
            fp = weights_fingerprint(_float_state(float_module, trainer))
        if self._state_valid(fp):
            self._ensure_quantized(trainer, pl_module, float_module)

    def _state_valid(self, fp: str) -> bool:
        return (self.calibrated and self._state.get("fingerprint") == fp
                and self._state.get("config") == self._config())

    def _restore(self) -> None:
        if self._swapped is None:
            return
        parent, child, float_module = self._swapped
        runner = getattr(parent, child) if child else vars(parent).pop("forward", None)
        if isinstance(runner, QuantizedModule):
            runner._last = None
        if child:
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
        log.info("REQuant calibration (%s) of %s:\n%s", self.mode, self._target_name, table)
        if self.verbose:
            print(f"REQuant calibration summary (mode={self.mode}, module={self._target_name}):\n{table}")

    def _export(self, source: nn.Module, batches: list[tuple[Any, ...]]) -> None:
        export = _export_fn()
        kwargs: dict[str, Any] = {"weight_bits": self.weight_bits, "act_bits": self.act_bits,
                                  "space": self.space or "sqrt",
                                  "per_channel": True if self.per_channel is None else self.per_channel}
        kwargs.update(self.export_kwargs)
        self.export_report = export(source, [b[0] for b in batches], self.export_onnx, **kwargs)
        log.info("REQuantCalibration: wrote %s", self.export_onnx)


# --------------------------------------------------------------------------- trainer helpers

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d, nn.Linear)


def _find_network(pl_module: nn.Module) -> str:
    """The child of ``pl_module`` holding its Conv/Linear layers, or ``""`` (the LightningModule's own
    forward) when such layers are its direct children; raises listing the candidates if ambiguous."""
    holders = [n for n, c in pl_module.named_children()
               if any(isinstance(m, _WEIGHTED) for m in c.modules())]
    nets = [n for n in holders if not isinstance(pl_module.get_submodule(n), _WEIGHTED)]
    if len(nets) == 1 and len(holders) == 1:
        return nets[0]
    if holders and len(nets) <= 1:
        return ""
    name = type(pl_module).__name__
    if not holders:
        raise ValueError(
            f"REQuantCalibration: {name} has no Conv/Linear layers to quantize (child modules: "
            f"{[n for n, _ in pl_module.named_children()]}); pass attr=<the network's attribute name>"
        )
    raise ValueError(
        f"REQuantCalibration: cannot tell which network of {name} to quantize: {nets} all hold "
        f"Conv/Linear layers; pass attr=<one of them>, e.g. REQuantCalibration(attr={nets[0]!r})"
    )


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
