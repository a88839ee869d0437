"""``python -m benchmarks.activation_observer_speed [--quick] [--threads N] [--vs-exact] ...``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from benchmarks.activation_observer_speed.doc import environment, exact_markdown, markdown
from benchmarks.activation_observer_speed.tap import DEFAULT_SAMPLE_SIZE, RANGES, Tap, collect, progress, summarise
from benchmarks.harness.markdown import OBSERVERS_HEADER, write_section
from benchmarks.harness.paths import DOCS
from benchmarks.harness.runtime import command
from requant_plugin.observers.scripts import load_task, quiet

DOC = DOCS / "observers-results.md"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write its section (``--no-write``: print only)."""
    from benchmarks.activation_observer_speed import __doc__ as doc

    p = argparse.ArgumentParser(prog="python -m benchmarks.activation_observer_speed",
                                description=(doc or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 batches of 32, 128 held-out images")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--test-images", type=int, default=512)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (HistogramObserver uses them)")
    p.add_argument("--repeat", type=int, default=5, help="timing runs; the median run is reported with the spread")
    p.add_argument("--sample-size", default=str(DEFAULT_SAMPLE_SIZE),
                   help="REQuantObserver(sample_size=...): values binned per batch, or 'all' (no subsample); "
                        "other values are not written to the docs")
    p.add_argument("--vs-exact", action="store_true",
                   help="one untimed-reference run: each observer's scale against an exactly binned REQuantObserver "
                        "(section activation-range-noise; the speed sections are not written)")
    args = p.parse_args(argv)
    Tap.sample_size = None if args.sample_size == "all" else int(args.sample_size)
    if Tap.sample_size != DEFAULT_SAMPLE_SIZE:
        args.no_write = True
    Tap.reference = args.vs_exact
    if args.vs_exact:
        args.repeat = 1
    if args.quick:
        args.calib_batches, args.batch_size, args.test_images, args.repeat = 4, 32, 128, 1
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    quiet()
    task = load_task(args.model, test_limit=args.test_images, calib_batches=args.calib_batches,
                     batch_size=args.batch_size, seed=args.seed, eval_batch_size=128)
    test = [b[0] for b in task.test]
    runs = []
    for _ in progress(range(args.repeat), "repeats"):
        taps = collect(task.model, task.calibration, test)
        runs.append(summarise(taps, len(task.calibration)))
    # the run with the median 0..127 wall speed-up is reported; the spread of all runs beside it
    order = sorted(range(len(runs)), key=lambda i: runs[i]["0..127"]["speedup_wall"])
    res = runs[order[len(order) // 2]]
    for _, hi in RANGES:
        res[f"0..{hi}"]["speedup_wall_runs"] = sorted(r[f"0..{hi}"]["speedup_wall"] for r in runs)
        res[f"0..{hi}"]["speedup_cpu_runs"] = sorted(r[f"0..{hi}"]["speedup_cpu"] for r in runs)
    res.update(model=task.name, dataset=task.dataset, batch_size=args.batch_size, repeats=args.repeat,
               test_images=sum(len(x) for x in test), env=environment())
    cmd = command("activation_observer_speed", list(sys.argv[1:] if argv is None else argv))
    if args.vs_exact:
        md = exact_markdown(res, cmd)
        print(md)
        if not args.no_write:
            write_section(DOC, "activation-range-noise", md, header=OBSERVERS_HEADER)
        return 0
    md = markdown(res, cmd)
    print(md)
    print(json.dumps(res, indent=1, default=str), file=sys.stderr)
    if not args.no_write:
        name = "activation-speed-quick" if args.quick else "activation-speed"
        write_section(DOC, name if args.threads == 2 else f"{name}-{args.threads}-thread", md,
                      header=OBSERVERS_HEADER)
    return 0
