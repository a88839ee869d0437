"""``python -m benchmarks.coverage [--archs ...] [--paths ...] [--size N [arch=N ...]] [--quick] ...``:
run (or take from the cache) every (architecture, path) cell and write docs/coverage.md."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.coverage.doc import counts, markdown
from benchmarks.coverage.models import ARCHS, DEFAULT_ARCHS
from benchmarks.coverage.paths import PATHS
from benchmarks.coverage.run import Matrix, Settings, run_matrix
from benchmarks.harness.cache import ResultCache, code_digest, stale_warning
from benchmarks.harness.paths import DOCS, QUICK_OUT, RESULTS
from benchmarks.harness.runtime import command, environment, setup

#: the CI subset (small and fast at a reduced input side)
QUICK_ARCHS = ("mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_1")
QUICK_SIZE = 32


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    from benchmarks.coverage import __doc__ as doc

    p = argparse.ArgumentParser(prog="python -m benchmarks.coverage", description=(doc or "").splitlines()[0])
    p.add_argument("--archs", nargs="+", default=None, choices=sorted(ARCHS), metavar="ARCH",
                   help=f"architectures (default: all of benchmarks.archs: {', '.join(DEFAULT_ARCHS)})")
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS), metavar="PATH",
                   help=f"library paths (default: all: {', '.join(PATHS)})")
    p.add_argument("--size", nargs="+", default=[], metavar="N|ARCH=N",
                   help="input side for every arch (N) and/or per arch (ARCH=N); default: the arch's "
                        "input_size; raised to the arch's min_size")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", default=None, help="the doc to write (default docs/coverage.md; --quick: a temp folder)")
    p.add_argument("--cache", default=None, help="the JSON cache of finished cells (default benchmarks/results/)")
    p.add_argument("--quick", action="store_true",
                   help=f"the CI subset: {', '.join(QUICK_ARCHS)} at {QUICK_SIZE} px, 2 calibration batches, "
                        "10 classes")
    p.add_argument("--batches", type=int, default=4, help="calibration batches")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--test", type=int, default=16, help="test images (output error and top-1 agreement)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default 1000; --quick: 10)")
    p.add_argument("--cell-timeout", type=float, default=None, help="seconds per cell (status timeout)")
    p.add_argument("--cached-only", action="store_true",
                   help="run nothing: write the doc from the cached cells (the others show as not run)")
    p.add_argument("--fresh", action="store_true", help="recompute this run's cells instead of reusing the cache")
    p.add_argument("--note", default="", help="a paragraph for the doc (e.g. why the input sides are reduced)")
    p.add_argument("--no-write", action="store_true", help="print the page instead of writing it")
    return p.parse_args(argv)


def sizes(args: argparse.Namespace, archs: Sequence[str]) -> dict[str, int]:
    """Per arch: ``ARCH=N`` if given, else the bare ``N``, else the arch's input size; at least min_size."""
    default: int | None = QUICK_SIZE if args.quick else None
    per: dict[str, int] = {}
    for item in args.size:
        name, _, value = item.rpartition("=")
        if name:
            if name not in ARCHS:
                raise SystemExit(f"--size {item}: unknown architecture {name!r}")
            per[name] = int(value)
        else:
            default = int(value)
    out = {}
    for a in archs:
        want = per.get(a, default if default is not None else ARCHS[a].input_size)
        out[a] = max(want, ARCHS[a].min_size)
    return out


def summary_line(matrix: Matrix) -> str:
    seconds = sum(float(r.get("seconds", 0.0)) for r in matrix.cells.values())
    n = counts(matrix)
    return f"[coverage] {len(matrix.cells)} cells ({n}), {seconds:.0f} s of cell time"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix and write the doc (``--no-write``: print it). Exit 1 if a cell is a failure."""
    args = parse(argv)
    archs = args.archs or (list(QUICK_ARCHS) if args.quick else list(DEFAULT_ARCHS))
    if args.quick:
        args.batches = min(args.batches, 2)
    classes = args.num_classes or (10 if args.quick else 1000)
    setup(args.seed, args.threads)
    folder = QUICK_OUT if args.quick else RESULTS
    cache = ResultCache(args.cache or folder / "coverage.json")
    base = Settings(0, args.batches, args.batch_size, args.test, args.seed, classes)
    matrix = run_matrix(archs, args.paths, sizes(args, archs), cache, base=base, fresh=args.fresh,
                        timeout=args.cell_timeout, cached_only=args.cached_only)
    warn = stale_warning((r.get("digest") for r in matrix.cells.values() if r.get("cached")), code_digest(),
                         "coverage cells", hint="rerun with --fresh to recompute them")
    if warn:
        print(warn, file=sys.stderr)
    cmd = command("coverage", list(sys.argv[1:] if argv is None else argv))
    page = markdown(matrix, cmd, environment(), args.note)
    if args.no_write:
        print(page)
    else:
        out = Path(args.out) if args.out else QUICK_OUT / "coverage.md" if args.quick else DOCS / "coverage.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page)
        print(f"[coverage] wrote {out}", file=sys.stderr)
    print(summary_line(matrix), file=sys.stderr)
    return 1 if counts(matrix)["failure"] else 0
