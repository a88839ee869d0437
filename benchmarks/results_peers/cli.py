"""``python -m benchmarks.results_peers [--quick] ...``: measure (or take from the cache) every
model x method x setting cell, then write ``results-peers.md`` and its figure."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any, cast

import torch

from benchmarks.harness.cache import ResultCache, code_digest, stale_warning
from benchmarks.harness.data import load_calibration, load_fp32, load_test_images
from benchmarks.harness.evaluate import Evaluator
from benchmarks.harness.paths import DOCS, QUICK_OUT, RESULTS
from benchmarks.harness.runtime import command, environment, setup
from benchmarks.results_peers.methods import BY_KEY, GRADIENT_PEERS, METHODS, W_ACTS, W_ONLY, CellError, bits_of


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command-line options (see ``--help``)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.results_peers",
                                 description="Peer PTQ methods by their own code vs REQuant, same harness.")
    ap.add_argument("--quick", action="store_true", help="ResNet-20 only, 2,000 test images")
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--methods", nargs="+", default=None, choices=[m.key for m in METHODS])
    ap.add_argument("--settings", nargs="+", default=list(W_ONLY), choices=[*W_ONLY, *W_ACTS])
    ap.add_argument("--n-cal", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr-iters", type=int, default=200,
                    help="Brevitas learned-round iterations per layer (Brevitas' default: 1000)")
    ap.add_argument("--engine", default="ort", choices=("ort", "torch"))
    ap.add_argument("--out", type=Path, default=None, help="docs folder (default: docs/, --quick: a temp folder)")
    ap.add_argument("--cache", type=Path, default=None, help="result cache (default: benchmarks/results/peers*.json)")
    ap.add_argument("--docs-only", action="store_true", help="write the doc from the cache, measure nothing")
    ap.add_argument("--summary-seeds", nargs="+", type=int, default=[0, 1, 2],
                    help="calibration seeds whose cached REQuant cells the seeds table summarises (measures nothing)")
    ap.add_argument("--refresh-stale", action="store_true", help="recompute results cached with other sources")
    return ap.parse_args(argv)


def measure(model_name: str, key: str, setting: str, cal: list[torch.Tensor], evaluator: Evaluator,
            opts: dict[str, Any]) -> dict[str, Any]:
    """One cell: quantize with the method's own code, evaluate with the shared evaluator."""
    method = BY_KEY[key]
    bits, act_bits = bits_of(setting)
    model = load_fp32(model_name)
    try:
        q, secs = method.run(model, bits, cal, dict(opts, act_bits=act_bits))
    except CellError as exc:
        return dict(error=str(exc))
    except Exception as exc:  # a peer's own failure is a result, reported with its message
        tb = traceback.format_exc().strip().splitlines()
        return dict(error=f"{type(exc).__name__}: {str(exc)[:300]}", where=tb[-3][:200] if len(tb) > 2 else "")
    engine = "torch" if act_bits is not None else None  # Brevitas act quantizers: torch forward
    return dict(acc=evaluator.accuracy(q, engine=engine), seconds=secs,
                distinct=max_distinct(q), engine=engine or evaluator.engine)


@torch.no_grad()
def max_distinct(model: torch.nn.Module) -> int:
    """The most distinct values in one output channel of any Conv/Linear weight (<= 2**bits if quantized)."""
    from benchmarks.harness.data import weight_layers

    most = 0
    for _, m in weight_layers(model):
        weight = cast(torch.Tensor, m.weight)
        w = weight.detach().reshape(weight.shape[0], -1)
        most = max(most, max(len(torch.unique(r)) for r in w))
    return most


def cell_options(key: str, lr_iters: int) -> dict[str, Any]:
    """The method options that are part of a cell's cache key (the learned round's / AdaRound's iterations: the
    method's own fixed count, else ``lr_iters``)."""
    return {"lr_iters": BY_KEY[key].iters or lr_iters} if key in GRADIENT_PEERS else {}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the doc."""
    args = parse(argv)
    setup(args.seed, args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    cmd = command("results_peers", list(argv if argv is not None else sys.argv[1:]))
    models = args.models or (["resnet20"] if args.quick else ["resnet20", "resnet56"])
    keys = args.methods or [m.key for m in METHODS]
    n_test = 2000 if args.quick else 10000
    out = args.out or (QUICK_OUT if args.quick else DOCS)
    cache = ResultCache(args.cache or RESULTS / ("peers_quick.json" if args.quick else "peers.json"))
    base = dict(n_test=n_test, n_cal=args.n_cal, seed=args.seed, engine=args.engine)
    code, reused = code_digest(), []
    res: dict[tuple[str, str, str], dict[str, Any]] = {}
    fp32: dict[str, float] = {}
    evaluator: Evaluator | None = None
    cal: list[torch.Tensor] = []
    if not args.docs_only:
        evaluator = Evaluator(load_test_images(None if n_test >= 10000 else n_test, seed=0), engine=args.engine)
        cal = load_calibration(args.n_cal, seed=args.seed, batch_size=64)
    for m in models:
        cfg = dict(base, model=m, method="fp32")
        hit = cache.get(cfg)
        if hit is None and evaluator is not None:
            hit = dict(acc=evaluator.accuracy(load_fp32(m)), code=code)
            cache.put(cfg, hit)
        if hit is not None:
            fp32[m] = hit["acc"]
            print(f"{m} FP32 {hit['acc']:.2f}", flush=True)
    for m in models:  # method-major: the fast rows of every setting come first
        for key in keys:
            for setting in [s for s in args.settings if BY_KEY[key].applies(bits_of(s)[1])]:
                opts = cell_options(key, args.lr_iters)
                cfg = dict(base, model=m, method=key, setting=setting, **opts)
                hit = cache.get(cfg)
                stale = hit is not None and hit.get("code") not in (None, code) and BY_KEY[key].system == "ours"
                if (hit is None or (stale and args.refresh_stale)) and evaluator is not None:
                    hit = {**measure(m, key, setting, cal, evaluator, opts), "code": code}
                    cache.put(cfg, hit)
                elif hit is not None and BY_KEY[key].system == "ours":
                    reused.append(hit.get("code"))
                if hit is None:
                    continue
                res[(m, key, setting)] = hit
                msg = hit.get("error") or f"{hit['acc']:.2f} ({hit['seconds']:.1f} s)"
                print(f"{m} {setting} {key:16s} {msg}", flush=True)
    warning = stale_warning(reused, code, "REQuant results")
    if warning:
        print(warning, flush=True)
    from benchmarks.results_peers.doc import write

    by_seed: dict[int, dict[tuple[str, str, str], dict[str, Any]]] = {args.seed: res}
    for sd in [sd for sd in args.summary_seeds if sd != args.seed]:
        cells = {(m, k, s): hit for m in models for k in keys for s in args.settings
                 if (hit := cache.get(dict(base, seed=sd, model=m, method=k, setting=s,
                                           **cell_options(k, args.lr_iters)))) is not None}
        if cells:
            by_seed[sd] = cells
    doc = write(out, res=res, fp32=fp32, models=models, keys=keys, settings=args.settings, by_seed=by_seed,
                meta=dict(cmd=cmd, env=environment(), n_test=n_test, n_cal=args.n_cal, seed=args.seed,
                          lr_iters=args.lr_iters, threads=args.threads, warning=warning))
    print(f"wrote {doc}")
    return 0
