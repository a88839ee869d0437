"""Mixed precision on the development split: per-layer widths under a size budget (bits per weight) chosen with
each layer's network sensitivity (the default of ``layer_error_curves``) or its own relative output error, against
every layer at the budget's width.

``python -m benchmarks.mixed_precision --models resnet20 resnet56 mobilenetv2 vgg mbconv --budgets 3 4 --seeds 0 1``

Per (model, seed, sensitivity): ``layer_error_curves(model, cal, (2, 3, 4, 5, 6, 8), sensitivity=...)`` once, then per
budget ``allocate_bits`` and ``quantize_weights(model, 4, recipe="beyond", overrides={name: {"bits": b}})``; the
``uniform`` variant is ``quantize_weights(model, budget, recipe="beyond")``. Scored as in :mod:`benchmarks.dev_split`
(the same calibration draws, the same 10,000 dev images); seconds include the curves. Results are cached in
``benchmarks/results/mixed_precision.json`` under the library's code digest; the table goes to ``docs/dev-split.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from benchmarks.dev_split import DOC, HEADER, calibration, load, logits, score, split
from benchmarks.harness.cache import ResultCache, code_digest
from benchmarks.harness.markdown import fmt, md_table, write_section
from benchmarks.harness.paths import RESULTS
from benchmarks.harness.runtime import command, environment, progress

CACHE = RESULTS / "mixed_precision.json"
CANDIDATES = (2, 3, 4, 5, 6, 8)
VARIANTS = ("uniform", "layer", "network")


def run_seed(model: nn.Module, x_train: Any, seed: int, budgets: Sequence[float], variant: str,
             dev: tuple[Any, Any, Any]) -> dict[float, dict[str, Any]]:
    """Every budget of one (model, seed, variant): the curves once, then one quantization per budget."""
    from requant_plugin.ptq import allocate_bits, layer_error_curves, quantize_weights, weight_counts, width_summary

    cal = calibration(x_train, seed)
    x_dev, y_dev, ref = dev
    out: dict[float, dict[str, Any]] = {}
    t0 = time.perf_counter()
    curves = None if variant == "uniform" else layer_error_curves(model, cal, CANDIDATES, sensitivity=variant)
    curve_secs = time.perf_counter() - t0
    for budget in budgets:
        t1 = time.perf_counter()
        if curves is None:
            if budget != int(budget):
                continue
            q, _ = quantize_weights(model, int(budget), recipe="beyond", calibration_data=cal)
            hist, used = {str(int(budget)): -1}, float(budget)
        else:
            sizes = weight_counts(model, curves)
            bits = allocate_bits(curves, sizes, budget)
            q, _ = quantize_weights(model, 4, recipe="beyond", calibration_data=cal,
                                    overrides={n: {"bits": b} for n, b in bits.items()})
            counts, used = width_summary(bits, sizes)
            hist = {str(b): k for b, k in counts.items()}
        secs = curve_secs + time.perf_counter() - t1
        out[budget] = {**score(ref, logits(q, x_dev), y_dev), "seconds": secs, "histogram": hist, "mean_bits": used}
    return out


def table(cache: ResultCache, digest: str, models: Sequence[str], budgets: Sequence[float],
          seeds: Sequence[int]) -> str:
    """One row per (model, budget, variant): KL, agreement and dev top-1 over the seeds; KL relative to uniform."""
    rows = []
    for m in models:
        for budget in budgets:
            base: float | None = None
            for v in VARIANTS:
                got = [cache.get(dict(model=m, budget=budget, seed=s, variant=v, code=digest)) for s in seeds]
                done = [r for r in got if r is not None]
                if not done:
                    continue
                kl = float(np.mean([r["kl"] for r in done]))
                base = kl if base is None else base
                hist = done[0]["histogram"]
                layers = "all" if list(hist.values()) == [-1] else ", ".join(f"{k}-bit x{n}" for k, n in hist.items())
                rows.append([m, fmt(budget, 1), v, fmt(done[0]["mean_bits"]), len(done), f"{kl:.5f}", fmt(kl / base, 3),
                             fmt(float(np.mean([r["agree"] for r in done]))),
                             fmt(float(np.mean([r["top1"] for r in done]))),
                             " / ".join("-" if r is None else f"{r['kl']:.5f}" for r in got), layers,
                             fmt(float(np.mean([r["seconds"] for r in done])), 1)])
    return md_table(["model", "bits/weight", "variant", "used", "seeds", "KL", "KL / first", "agree %", "dev top-1",
                     "KL per seed", "layers (first seed)", "s"], rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mixed_precision",
                                 description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2"])
    ap.add_argument("--budgets", type=float, nargs="+", default=[3.0, 4.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--section", default="dev-mixed-precision", help="section name in docs/dev-split.md")
    ap.add_argument("--no-write", action="store_true", help="print the table instead of writing the page")
    args = ap.parse_args(argv)
    if any(not 2 <= b <= 8 for b in args.budgets):
        ap.error(f"--budgets must lie within 2..8 bits per weight, got {args.budgets}")
    x_train, x_dev, y_dev = split(args.threads)
    digest, cache = code_digest(), ResultCache(CACHE)
    jobs = [(m, s, v) for m in args.models for s in args.seeds for v in args.variants]
    nets: dict[str, tuple[nn.Module, Any]] = {}
    for m, s, v in progress(jobs, "mixed precision"):
        todo = [b for b in args.budgets if cache.get(dict(model=m, budget=b, seed=s, variant=v, code=digest)) is None
                and (v != "uniform" or b == int(b))]
        if not todo:
            continue
        if m not in nets:
            net = load(m)
            nets[m] = (net, logits(net, x_dev))
        net, ref = nets[m]
        for budget, result in run_seed(net, x_train, s, todo, v, (x_dev, y_dev, ref)).items():
            if not all(math.isfinite(x) for x in result.values() if isinstance(x, float)):
                raise SystemExit(f"non-finite result for {m} {budget} {s} {v}: {result}")
            cache.put(dict(model=m, budget=budget, seed=s, variant=v, code=digest), result)
    body = table(cache, digest, args.models, args.budgets, args.seeds)
    argv_text = command("mixed_precision", argv if argv is not None else sys.argv[1:])
    body += f"\n\nLibrary digest {digest}. Command: `{argv_text}`\n\nMachine: {environment()}\n"
    if args.no_write:
        print(body)
        return 0
    write_section(DOC, args.section, body, header=HEADER)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
