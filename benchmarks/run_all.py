"""Run every issue-7 / issue-3 benchmark in order and regenerate the docs.

``python benchmarks/run_all.py``: search quality, search cost, accuracy tables, convexity
(about 40 minutes on 2 idle cores; cached accuracy results are reused), writing
``docs/results.md``, ``docs/headline.md``, ``docs/core-results.md`` and ``docs/img/*.png``.
``--quick``: the CI subset of each script (outputs in a temp folder, docs untouched);
``--smoke``: the smallest accuracy subset only. Exits non-zero if any script reports a
failed claim or target.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("search_quality.py", "search_cost.py", "accuracy_table.py", "convexity.py")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="docs folder for --quick/--smoke output")
    args = ap.parse_args(argv)
    flags = ["--quick"] if args.quick else []
    scripts: tuple[str, ...] = SCRIPTS
    if args.smoke:
        scripts, flags = ("accuracy_table.py",), ["--smoke"]
    if args.out is not None:
        flags += ["--out", str(args.out)]
    status = {}
    for script in scripts:
        t0 = time.perf_counter()
        print(f"== {script} {' '.join(flags)}", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / script), *flags])
        status[script] = (rc, time.perf_counter() - t0)
    for script, (rc, secs) in status.items():
        print(f"{script}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {secs:.0f} s")
    return 1 if any(rc for rc, _ in status.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
