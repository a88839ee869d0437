"""``python -m benchmarks.observers_accuracy [--quick] [--only fx|pt2e [--seeds ...]] ...``: run
(or take from the cache) every configuration and write docs/observers-results.md."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.harness.markdown import OBSERVERS_HEADER, write_section
from benchmarks.harness.paths import DOCS
from benchmarks.harness.runtime import command
from benchmarks.observers_accuracy.doc import markdown, short_markdown
from benchmarks.observers_accuracy.run import CACHE, run_model
from benchmarks.observers_accuracy.seeds import plot_seeds, seeds_markdown
from requant_plugin.observers.scripts import quiet

DOC = DOCS / "observers-results.md"


def parse(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The parser and the command-line options (see ``--help``)."""
    from benchmarks.observers_accuracy import __doc__ as doc

    p = argparse.ArgumentParser(prog="python -m benchmarks.observers_accuracy", description=(doc or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="ResNet-20, 1,000 test images, 8 calibration batches")
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="recompute the cells this run reads (other cached cells stay)")
    p.add_argument("--refresh-stale", action="store_true",
                   help="recompute cached results recorded with other versions of the library sources")
    p.add_argument("--refresh", nargs="+", default=[], metavar="CELL",
                   help="recompute these cached cells whatever their digest (e.g. fx_w8a8_requant_refined "
                        "pt2e_w4a8_requant_refined pt2e_w4a4_requant_refined after a change to the refinement)")
    p.add_argument("--skip-diagnostics", action="store_true", help="skip the weights-only W4 diagnostics")
    p.add_argument("--only", choices=("fx", "pt2e"), default=None,
                   help="one flow only (a short table in its own section, e.g. for other --seed values)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="with --only fx: every listed calibration seed (cached runs reused) and a summary "
                        "over them (section accuracy-fx-seeds)")
    p.add_argument("--no-write", action="store_true")
    return p, p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write its section (``--no-write``: print only)."""
    p, args = parse(argv)
    if args.seeds is not None and args.only != "fx":
        p.error("--seeds summarises the FX W8A8 comparison: add --only fx")
    if args.quick:
        args.models, args.test_limit, args.calib_batches = ["resnet20"], 1000, 8
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    quiet()
    cache: dict[str, Any] = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    cmd = command("observers_accuracy", list(sys.argv[1:] if argv is None else argv))
    if args.seeds is not None:
        runs = {}
        for seed in args.seeds:
            args_s = argparse.Namespace(**{**vars(args), "seed": seed})
            torch.manual_seed(seed)
            runs[seed] = {name: run_model(name, args_s, cache) for name in args.models}
        md = seeds_markdown(runs, cmd)
        print(md)
        if not args.no_write:
            png = plot_seeds(runs)
            write_section(DOC, "accuracy-fx-seeds",
                          md + f"\n\n![FX W8A8 per calibration seed](img/{png.name})", header=OBSERVERS_HEADER)
        return 0
    models = {name: run_model(name, args, cache) for name in args.models}
    if args.only is not None:
        md = short_markdown(models, args, cmd)
        section = f"accuracy-{args.only}-seed{args.seed}"
    else:
        md = markdown(models, args, cmd)
        section = "accuracy-quick" if args.quick else "accuracy"
    print(md)
    if not args.no_write:
        write_section(DOC, section, md, header=OBSERVERS_HEADER)
    return 0
