"""Building and evaluating the configurations of the accuracy tables, with the result cache.

REQuant rows run through the public ``quantize_weights``; peers through
``benchmarks.harness.peers``; PTQ rows through torchao pt2e. A cached REQuant/PTQ result records
the ``code_digest()`` of the library it was computed with; results of other sources are reported
(``Runner.run`` prints a warning) and recomputed with ``--refresh-stale``.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.accuracy_table.configs import EXPLORE, METHODS, PTQ_CALIB, Config, explore_config, uses_code
from benchmarks.harness import peers
from benchmarks.harness.cache import ResultCache, code_digest, stale_warning
from benchmarks.harness.data import apply_per_layer, load_calibration, load_fp32, weights_digest
from benchmarks.harness.evaluate import Evaluator

#: the digest of the library sources now (cached REQuant rows with another one are stale)
CODE = code_digest()


def normalise_cache(cache: ResultCache) -> None:
    """Move a ``code`` digest found in old keys into the record (keys stay code-free)."""
    fixed: dict[str, Any] = {}
    for k, rec in cache.data.items():
        key = json.loads(k)
        code = key.pop("code", None)
        if code is not None and isinstance(rec, dict):
            rec = {**rec, "code": code}
        fixed[ResultCache.key(key)] = rec
    cache.data = fixed


def build_ptq(fp32: nn.Module, cfg: Config, calib: list[torch.Tensor]) -> nn.Module:
    """Full PTQ through torchao pt2e (x86 Inductor quantizer specs): weights ``cfg.bits``,
    activations ``act_bits`` (default 8), calibrated on ``calib``; the converted graph
    (decomposed quantize/dequantize ops, sub-8-bit ranges honoured) is returned."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from requant_plugin.pt2e import (
        get_requant_quantizer,
        get_torchao_default_quantization_config,
        make_quantizer,
    )

    extra = dict(cfg.extra)
    act_bits = int(extra.get("act_bits", 8))
    if cfg.method == "ptq_requant":
        quantizer = get_requant_quantizer(cfg.bits, act_bits, per_channel=cfg.per_channel)
    else:
        quantizer = make_quantizer(
            get_torchao_default_quantization_config(cfg.bits, act_bits, per_channel=cfg.per_channel)
        )
    batch = torch.export.Dim("batch", min=1, max=4096)
    exported = torch.export.export(fp32, (calib[0],), dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for x in calib:
            prepared(x)
    return convert_pt2e(prepared)


def build(fp32: nn.Module, cfg: Config, calib: Callable[[], list[torch.Tensor]] | None = None) -> nn.Module:
    """The weight-quantized model for ``cfg`` (``fp32`` is never modified)."""
    method = METHODS[cfg.method]
    if method.kind == "fp32":
        return fp32
    if method.kind == "ptq":
        if calib is None:
            raise ValueError("PTQ configurations need calibration images")
        return build_ptq(fp32, cfg, calib())
    if method.kind == "peer":
        mod = peers.get(cfg.method)

        def fn(name: str, w: torch.Tensor, ch_axis: int) -> torch.Tensor:
            return mod.quantize_weight(w, cfg.bits, per_channel=cfg.per_channel, symmetric=False, ch_axis=ch_axis)

        return apply_per_layer(fp32, fn, fold_bn=cfg.fold_bn)
    from requant_plugin import quantize_weights

    kwargs: dict[str, Any] = {**method.requant, "per_channel": cfg.per_channel, "fold_bn": cfg.fold_bn}
    kwargs.update(dict(cfg.extra))
    model, _ = quantize_weights(fp32, cfg.bits, **kwargs)
    return model


class Runner:
    """Evaluates configurations with caching and prints one line per result."""

    def __init__(
        self, evaluator: Evaluator, cache: ResultCache, fresh: bool = False, refresh_stale: bool = False
    ) -> None:
        self.ev, self.cache, self.fresh, self.refresh_stale = evaluator, cache, fresh, refresh_stale
        normalise_cache(cache)
        self.models: dict[str, nn.Module] = {}
        self.failed: dict[Config, str] = {}
        self._calib: list[torch.Tensor] | None = None

    def calib(self) -> list[torch.Tensor]:
        if self._calib is None:
            self._calib = load_calibration(PTQ_CALIB, seed=0)
        return self._calib

    def model(self, name: str) -> nn.Module:
        if name not in self.models:
            self.models[name] = load_fp32(name)
        return self.models[name]

    def get(self, cfg: Config) -> dict[str, Any] | None:
        return self.cache.get(cfg.key(self.ev.images.n, self.ev.engine))

    def acc(self, cfg: Config) -> float | None:
        rec = self.get(cfg)
        return None if rec is None else float(rec["acc"])

    def digest(self, cfg: Config) -> str | None:
        rec = self.get(cfg)
        return None if rec is None else str(rec.get("digest"))

    def stale(self, cfg: Config) -> bool:
        """A cached REQuant result computed with other REQuant sources than the ones here now."""
        rec = self.get(cfg)
        return rec is not None and uses_code(cfg) and rec.get("code") not in (None, CODE)

    def codes_used(self) -> set[str]:
        return {str(r["code"]) for r in self.cache.data.values() if isinstance(r, dict) and r.get("code")}

    def run(self, cfgs: list[Config]) -> None:
        todo = [
            c
            for c in dict.fromkeys(cfgs)
            if self.fresh or self.get(c) is None or (self.refresh_stale and self.stale(c))
        ]
        print(f"{len(cfgs)} configurations, {len(todo)} to evaluate on {self.ev.images.n} images", flush=True)
        reused = [self.get(c) for c in dict.fromkeys(cfgs) if c not in todo and uses_code(c)]
        codes = (r["code"] for r in reused if r is not None and r.get("code"))
        warning = stale_warning(codes, CODE, "REQuant/PTQ results")
        if warning:
            print(warning, flush=True)
        for i, cfg in enumerate(todo, 1):
            t0 = time.perf_counter()
            try:
                model = build(self.model(cfg.model), cfg, self.calib)
            except (ImportError, NotImplementedError) as exc:
                self.failed[cfg] = f"{type(exc).__name__}: {exc}"
                print(f"[{i}/{len(todo)}] {cfg}: skipped ({exc})", flush=True)
                continue
            t1 = time.perf_counter()
            acc = self.ev.accuracy(model, "torch" if METHODS[cfg.method].kind == "ptq" else None)
            t2 = time.perf_counter()
            rec = {
                "acc": acc,
                "quant_s": round(t1 - t0, 3),
                "eval_s": round(t2 - t1, 3),
                "digest": weights_digest(model),
                "code": CODE if uses_code(cfg) else None,
                "when": datetime.datetime.now().isoformat(timespec="seconds"),
            }
            self.cache.put(cfg.key(self.ev.images.n, self.ev.engine), rec)
            print(
                f"[{i}/{len(todo)}] {cfg.model} {cfg.method} W{cfg.bits} pc={cfg.per_channel} "
                f"fold={cfg.fold_bn} {dict(cfg.extra)}: {acc:.2f}%  "
                f"(quant {t1 - t0:.1f}s, eval {t2 - t1:.1f}s)",
                flush=True,
            )



def top_settings(runner: Runner, n: int, bits: int = 4) -> list[str]:
    """The ``n`` explored settings with the best top-1 at ``bits``."""
    scored = sorted(((runner.acc(explore_config(k, bits)) or -1.0, k) for k in EXPLORE), reverse=True)
    return [k for _, k in scored[:n]]


def pick_best(runner: Runner, bits: int = 4) -> str:
    """The explored setting with the best top-1 at ``bits``."""
    scored = [(runner.acc(explore_config(k, bits)) or -1.0, k) for k in EXPLORE]
    return max(scored)[1]
