"""Run every issue-7 / issue-3 benchmark in order and regenerate the docs.

``python -m benchmarks.run_all``: search quality, search cost, accuracy tables, convexity
(about 40 minutes on 2 idle cores; cached accuracy results are reused), writing
``docs/results.md``, ``docs/headline.md``, ``docs/core-results.md`` and ``docs/img/*.png``.
``--quick``: the CI subset of each benchmark (outputs in a temp folder, docs untouched);
``--smoke``: the smallest accuracy subset only. Exits non-zero if any benchmark reports a
failed claim or target. Each runs as ``python -m benchmarks.<name>`` from the repository root.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness.paths import ROOT

BENCHMARKS = ("search_quality", "search_cost", "accuracy_table", "convexity")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks one after the other; 1 when any of them fails."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="docs folder for --quick/--smoke output")
    args = ap.parse_args(argv)
    flags = ["--quick"] if args.quick else []
    names: tuple[str, ...] = BENCHMARKS
    if args.smoke:
        names, flags = ("accuracy_table",), ["--smoke"]
    if args.out is not None:
        flags += ["--out", str(args.out.resolve())]
    status = {}
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name} {' '.join(flags)}", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *flags], cwd=ROOT)
        status[name] = (rc, time.perf_counter() - t0)
    for name, (rc, secs) in status.items():
        print(f"{name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {secs:.0f} s")
    return 1 if any(rc for rc, _ in status.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
