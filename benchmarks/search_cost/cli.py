"""``python -m benchmarks.search_cost [--quick] [--from-json [--speed-only]]``: time, write the docs,
check the speed claims (exit 1 when one fails)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness.markdown import CORE_HEADER, CORE_ORDER, RESULTS_HEADER, RESULTS_ORDER, write_section
from benchmarks.harness.paths import DOCS, QUICK_OUT, RESULTS
from benchmarks.harness.runtime import command, setup
from benchmarks.search_cost.doc import speed_section, tables
from benchmarks.search_cost.measure import Summary, check_claims, measure, summarise, whole_model_runs
from benchmarks.search_cost.methods import METHODS


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command-line options (see ``--help``)."""
    from benchmarks.search_cost import __doc__ as doc

    ap = argparse.ArgumentParser(prog="python -m benchmarks.search_cost", description=(doc or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="docs folder (default docs/; quick: a temp dir)")
    ap.add_argument(
        "--from-json",
        action="store_true",
        help="rebuild the docs from benchmarks/results/search_cost*.json without measuring again",
    )
    ap.add_argument(
        "--speed-only",
        action="store_true",
        help="with --from-json: measure only the whole-model ResNet-50-sized speed (issue 3) again",
    )
    return ap.parse_args(argv)


def write_speed(summary: Summary, saved: dict[str, Any], args: argparse.Namespace, out_docs: Path,
                cmd: str) -> dict[str, Any]:
    """The issue-3 speed section (whole-model runs measured again unless cached) and the summary
    saved for docs/headline.md."""
    if "speed" in saved and "grid100_s" in saved and not args.speed_only:
        runs, grid_s = saved["speed"], float(saved["grid100_s"])
    else:
        runs, grid_s = whole_model_runs("resnet50-random", 4, 3)
    speed = speed_section(summary, cmd, runs, grid_s)
    write_section(out_docs / "core-results.md", "speed", speed, header=CORE_HEADER, order=CORE_ORDER)
    print(speed)
    r50 = summary.get(("resnet50-random", 4), {})
    ref = r50["requant"]["total"]
    ratios = ", ".join(f"{METHODS[m][0]} {s['total'] / ref:.1f}x" for m, s in r50.items() if m != "requant")
    head = (
        f"Search cost on ResNet-50-sized weights (25.5M values, 54 tensors, W4 per tensor, interleaved "
        f"runs on a shared 2-core CPU): REQuant alpha {ref:.2f} s for the whole model; the others take, "
        f"relative to it: {ratios}."
    )
    return {"headline": head, "speed": runs, "grid100_s": grid_s}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every speed claim holds, else 1."""
    args = parse(argv)
    setup(0)
    argv_s = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--from-json", "--speed-only")]
    cmd = command("search_cost", argv_s)
    methods = list(METHODS)
    if args.quick:
        sets, bits_list, repeats = ["resnet20"], [4], args.repeats or 1
        methods = ["requant", "requant_sqrt", "grid100", "torchao_mse", "modelopt_mse", "brevitas_mse"]
    else:
        sets, bits_list, repeats = ["resnet20", "resnet56", "resnet50-random"], [4, 8], args.repeats or 2
    out_docs = args.out or (QUICK_OUT if args.quick else DOCS)
    res_dir = out_docs if args.quick else RESULTS
    res_dir.mkdir(parents=True, exist_ok=True)
    summary_file = res_dir / "search_cost_summary.json"
    if args.from_json:
        records = json.loads((res_dir / "search_cost.json").read_text())
        saved = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        repeats = int(saved.get("repeats", repeats))
    else:
        records = measure(sets, bits_list, repeats, methods)
        (res_dir / "search_cost.json").write_text(json.dumps(records, indent=1))
        saved = {}
    summary = summarise(records, methods)
    claims = check_claims(summary)
    body = (
        tables(summary, cmd, repeats)
        + "\n**Speed claims** (`--quick` checks them on ResNet-20 at W4):\n\n"
        + "\n".join(f"- {'holds' if ok else '**FAILS**'}: {text}" for text, ok in claims)
    )
    write_section(out_docs / "results.md", "search-cost", body, header=RESULTS_HEADER, order=RESULTS_ORDER)
    print(body)
    failures = sum(not ok for _, ok in claims)
    if not args.quick:
        summary_file.write_text(json.dumps({**write_speed(summary, saved, args, out_docs, cmd), "repeats": repeats},
                                           indent=1))
    print(f"wrote {out_docs / 'results.md'}")
    return 1 if failures else 0
