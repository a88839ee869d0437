"""``python -m benchmarks.beyond_paper [--quick] ...``: measure (or take from the cache) every row,
the size sweep, the calibration repeats, mixed precision and timing, then write the doc."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.beyond_paper.doc import Tables, write_doc
from benchmarks.beyond_paper.findings import Res
from benchmarks.beyond_paper.measure import measure_time, run_mixed, run_one
from benchmarks.beyond_paper.plot import plot
from benchmarks.beyond_paper.rows import (
    MIXED_BUDGETS,
    MIXED_CANDIDATES,
    MIXED_SENSITIVITIES,
    QUICK_ROWS,
    ROWS,
    SEED_ROWS,
    SEED_RUNS,
    SWEEP,
)
from benchmarks.harness.cache import ResultCache, code_digest, stale_warning
from benchmarks.harness.data import load_calibration, load_fp32, load_test_images
from benchmarks.harness.evaluate import Evaluator
from benchmarks.harness.paths import DOCS, QUICK_OUT, RESULTS
from benchmarks.harness.runtime import command, progress, setup


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command-line options (see ``--help``)."""
    from benchmarks.beyond_paper import __doc__ as doc

    ap = argparse.ArgumentParser(prog="python -m benchmarks.beyond_paper", description=(doc or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="ResNet-20, 2,000 test images, fewer rows")
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--n-cal", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", default="ort", choices=("ort", "torch"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-sweep", action="store_true", help="skip the accuracy-vs-size sweep")
    ap.add_argument("--no-seeds", action="store_true", help="skip the calibration-seed repeats")
    ap.add_argument("--no-timing", action="store_true", help="skip the ResNet-56 calibration timing")
    ap.add_argument("--timing-threads", type=int, nargs="+", default=[1, 2],
                    help="torch and BLAS threads for the timing runs (default: 1 and 2)")
    ap.add_argument("--out", type=Path, default=None, help="docs folder (default: docs/, --quick: a temp folder)")
    ap.add_argument("--refresh-stale", action="store_true",
                    help="recompute cached results recorded with other versions of the library sources")
    return ap.parse_args(argv)


@dataclass
class Context:
    """What every measurement shares: the cache, its base key, the evaluator and calibration data.

    New results record the ``code_digest()`` of the library (``code``); the digests of the cached
    results reused are collected in ``reused`` (``None``: recorded before digests were kept)."""

    args: argparse.Namespace
    cache: ResultCache
    base: dict[str, Any]
    evaluator: Evaluator
    cal: list[torch.Tensor]
    code: str = field(default_factory=code_digest)
    reused: list[str | None] = field(default_factory=list)

    def cached(self, cfg: dict[str, Any], compute: Any) -> dict[str, Any]:
        """The cached result of ``cfg``, else ``compute()`` (then cached with ``code``); with
        ``--refresh-stale`` a result recorded with another digest is computed again."""
        hit = self.cache.get(cfg)
        stale = hit is not None and hit.get("code") not in (None, self.code)
        if hit is None or (stale and self.args.refresh_stale):
            hit = {**compute(), "code": self.code}
            self.cache.put(cfg, hit)
        else:
            self.reused.append(hit.get("code"))
        return hit

    def warn_stale(self) -> None:
        """Print how many reused results were computed with other library sources."""
        warning = stale_warning(self.reused, self.code, "results",
                                "rerun with --refresh-stale to recompute those with a digest")
        if warning:
            print(warning, flush=True)


def measure_rows(ctx: Context, models: list[str], bits_list: list[int], rows: list[Any]) -> Res:
    """Every table row at every model x bit width."""
    res: Res = {}
    jobs = [(m, b, r) for m in models for b in bits_list for r in rows]
    for m, b, r in progress(jobs, "beyond"):
        cfg = dict(ctx.base, model=m, bits=b, kwargs=r.kwargs, snap=r.snap_int8, data=r.data)
        hit = ctx.cached(cfg, lambda m=m, b=b, r=r: run_one(m, load_fp32(m), b, r.kwargs, r.snap_int8, r.data,
                                                            ctx.cal, ctx.evaluator))
        res[(r.key, m, b)] = hit
        print(f"{m} W{b} {r.key:16s} {hit['acc']:.2f} ({hit['seconds']:.1f} s)", flush=True)
    return res


def measure_sweep(ctx: Context, models: list[str], sweep_bits: list[int]) -> Res:
    """The ``SWEEP`` rows at every bit width of the size sweep."""
    sweep: Res = {}
    for m, b, k in progress([(m, b, k) for m in models for k in SWEEP for b in sweep_bits], "size sweep"):
        kw = SWEEP[k][1]
        needs = k.startswith("beyond")
        cfg = dict(ctx.base, model=m, bits=b, kwargs=kw, snap=False, data=needs)
        hit = ctx.cached(cfg, lambda m=m, b=b, kw=kw, needs=needs: run_one(m, load_fp32(m), b, kw, False, needs,
                                                                          ctx.cal, ctx.evaluator))
        sweep[(k, m, b)] = hit
        print(f"sweep {m} W{b} {k:10s} {hit['acc']:.2f} {hit['size_bits'] / 8192:.0f} KiB", flush=True)
    return sweep


def measure_seeds(ctx: Context, models: list[str], bits_list: list[int], rows: list[Any]) -> Res:
    """The ``SEED_ROWS`` with each calibration subset of ``SEED_RUNS``."""
    seeds: Res = {}
    args = ctx.args
    for sd in SEED_RUNS:
        cal_s = ctx.cal if sd == args.seed else load_calibration(args.n_cal, seed=sd, batch_size=64)
        for m in models:
            for b in bits_list:
                for key in SEED_ROWS:
                    r = next(x for x in rows if x.key == key)
                    cfg = dict(ctx.base, seed=sd, model=m, bits=b, kwargs=r.kwargs, snap=r.snap_int8, data=r.data)
                    hit = ctx.cached(cfg, lambda m=m, b=b, r=r, cal_s=cal_s: run_one(
                        m, load_fp32(m), b, r.kwargs, r.snap_int8, r.data, cal_s, ctx.evaluator))
                    seeds[(f"{key}@{sd}", m, b)] = hit
                    print(f"seed {sd} {m} W{b} {key:12s} {hit['acc']:.2f}", flush=True)
    return seeds


def measure_mixed(ctx: Context, models: list[str]) -> Res:
    """Mixed precision under each budget of ``MIXED_BUDGETS``, with each of ``MIXED_SENSITIVITIES``."""
    mixed: Res = {}
    for m in models:
        for sens in MIXED_SENSITIVITIES:
            for budget in MIXED_BUDGETS:
                cfg = dict(ctx.base, model=m, row="mixed", budget=budget, candidates=list(MIXED_CANDIDATES))
                if sens != "layer":
                    cfg["sensitivity"] = sens
                hit = ctx.cached(cfg, lambda m=m, budget=budget, sens=sens: run_mixed(
                    load_fp32(m), budget, ctx.cal, ctx.evaluator, sens))
                mixed[(f"mixed-{sens}", m, int(budget * 10))] = hit
                print(f"mixed ({sens}) {m} {budget} bits/weight: {hit['acc']:.2f} {hit['size_bits'] / 8192:.0f} KiB "
                      f"{hit['histogram']}", flush=True)
    return mixed


def _timed(ctx: Context, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(threads):
            hit = measure_time(ctx.cal, threads)
    except ImportError:  # pragma: no cover
        hit = measure_time(ctx.cal, threads)
    torch.set_num_threads(ctx.args.threads)
    return hit


def measure_timing(ctx: Context) -> list[dict[str, Any]]:
    """The ResNet-56 beyond W4 wall time with each of ``--timing-threads``."""
    timing = []
    for threads in ctx.args.timing_threads:
        hit = ctx.cached(dict(ctx.base, row="timing-resnet56-beyond-w4", threads=threads),
                         lambda threads=threads: _timed(ctx, threads))
        timing.append(hit)
        print(f"timing: {hit}", flush=True)
    return timing


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write ``results-beyond.md`` (and its figure) into the docs folder."""
    args = parse(argv)
    setup(args.seed, args.threads)
    try:  # NumPy's BLAS gets the same thread budget as torch (the CPU is shared)
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:  # pragma: no cover
        pass
    cmd = command("beyond_paper", list(argv if argv is not None else sys.argv[1:]))
    models = args.models or (["resnet20"] if args.quick else ["resnet20", "resnet56"])
    n_test = 2000 if args.quick else 10000
    bits_list = [4, 3]
    rows = [r for r in ROWS if r.key in QUICK_ROWS] if args.quick else ROWS
    sweep_bits = [2, 3, 4, 6] if args.quick else [2, 3, 4, 5, 6, 8]
    out = args.out or (QUICK_OUT if args.quick else DOCS)
    cache = ResultCache(RESULTS / ("beyond_quick.json" if args.quick else "beyond.json"))
    images = load_test_images(None if n_test >= 10000 else n_test, seed=0)
    evaluator = Evaluator(images, engine=args.engine)
    cal = load_calibration(args.n_cal, seed=args.seed, batch_size=64)
    base = dict(n_test=images.n, n_cal=args.n_cal, seed=args.seed, engine=args.engine)
    ctx = Context(args, cache, base, evaluator, cal)

    fp32 = {}
    for m in models:
        fp32[m] = ctx.cached(dict(base, model=m, row="fp32"),
                             lambda m=m: dict(acc=evaluator.accuracy(load_fp32(m))))["acc"]
        print(f"{m} FP32 {fp32[m]:.2f}", flush=True)
    t = Tables(res=measure_rows(ctx, models, bits_list, rows), models=models, bits_list=bits_list, rows=rows,
               fp32=fp32, cmd=cmd, n_test=images.n, n_cal=args.n_cal)
    if not args.no_sweep:
        t.sweep = measure_sweep(ctx, models, sweep_bits)
    if not args.quick and not args.no_seeds:
        t.seeds = measure_seeds(ctx, models, bits_list, rows)
    if not args.no_sweep:
        t.mixed = measure_mixed(ctx, models)
    if not args.no_timing and not args.quick:
        t.timing = measure_timing(ctx)
    if t.sweep:
        plot(out / "img" / "beyond_accuracy_vs_size.png", t.sweep, models, fp32, t.mixed)
        t.png = "img/beyond_accuracy_vs_size.png"
    ctx.warn_stale()
    doc = out / "results-beyond.md"
    write_doc(doc, t)
    print(f"wrote {doc}")
    return 0
