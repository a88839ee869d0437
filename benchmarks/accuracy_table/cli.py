"""``python -m benchmarks.accuracy_table [--quick|--smoke] [--only PART] ...``: run, write the docs,
check the ordering claims (exit 1 when an expected claim fails on the measured cells)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.accuracy_table.claims import check_claims, claims_section, print_claims
from benchmarks.accuracy_table.configs import BITS, MODELS, Config, explore_config, full_plan, main_configs
from benchmarks.accuracy_table.doc import explore_section, headline, ptq_section, setup_text
from benchmarks.accuracy_table.run import Runner, build, pick_best, top_settings
from benchmarks.accuracy_table.tables import ablation_section, accuracy_section, grid_table
from benchmarks.harness.cache import ResultCache
from benchmarks.harness.data import load_test_images
from benchmarks.harness.evaluate import Evaluator
from benchmarks.harness.markdown import (
    CORE_HEADER,
    CORE_ORDER,
    RESULTS_HEADER,
    RESULTS_ORDER,
    write_section,
)
from benchmarks.harness.paths import DOCS, QUICK_OUT, RESULTS
from benchmarks.harness.runtime import command, setup

PARTS = ("main", "ablation", "explore", "ptq")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command-line options (see ``--help``)."""
    from benchmarks.accuracy_table import __doc__ as doc

    ap = argparse.ArgumentParser(prog="python -m benchmarks.accuracy_table", description=(doc or "").splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CI subset: ResNet-20, 1,000 images, W4/W3")
    mode.add_argument("--smoke", action="store_true", help="tiny subset: ResNet-20, 300 images, W3")
    ap.add_argument("--engine", choices=("ort", "torch"), default="ort")
    ap.add_argument("--fresh", action="store_true", help="ignore cached results")
    ap.add_argument(
        "--refresh-stale",
        action="store_true",
        help="recompute REQuant rows cached with other versions of the REQuant sources",
    )
    ap.add_argument("--out", type=Path, default=None, help="docs folder (default docs/; quick: a temp dir)")
    ap.add_argument("--only", choices=PARTS, action="append", help="run only these parts (default: all)")
    return ap.parse_args(argv)


def run_small(runner: Runner, args: argparse.Namespace, out_docs: Path, cmd: str) -> int:
    """``--quick``/``--smoke``: the subset table (and the engine agreement check); returns failures."""
    models, bits = ("resnet20",), ((4, 3) if args.quick else (3,))
    methods = (
        ("minmax", "modelopt_mse", "torchao_mse", "requant", "requant_sqrt")
        if args.quick
        else ("minmax", "requant", "requant_sqrt")
    )
    runner.run(main_configs(models, bits, methods, folded=(), per_channel=()))
    failures = 0
    if args.quick:  # the ONNX Runtime engine must agree with evaluate_accuracy
        probe = build(runner.model("resnet20"), Config("resnet20", "requant_sqrt", 4))
        a_ort, a_torch = runner.ev.accuracy(probe, "ort"), runner.ev.accuracy(probe, "torch")
        ok = abs(a_ort - a_torch) <= 0.1 + 1e-9
        failures += not ok
        print(
            f"engine check (REQuant+sqrt W4): ONNX Runtime {a_ort:.2f} vs torch {a_torch:.2f}: "
            f"{'OK' if ok else 'MISMATCH'}"
        )
    table = grid_table(runner, models, bits, methods, False, False)
    write_section(
        out_docs / "results.md",
        "accuracy",
        f"## Quick accuracy check\n\nCommand: `{cmd}`\n\n{table}",
        header=RESULTS_HEADER,
        order=RESULTS_ORDER,
    )
    print(table)
    return failures + print_claims(check_claims(runner, models))


def run_full(runner: Runner, parts: set[str], out_docs: Path, cmd: str) -> int:
    """The full tables (cached configurations are reused) and every doc section; returns failures."""
    runner.run(full_plan(parts))
    if "explore" in parts:  # W3 for the three best W4 settings, then the winner at every width
        runner.run([explore_config(k, 3) for k in top_settings(runner, 3)])
        runner.run([explore_config(pick_best(runner), b) for b in BITS])
    results_md = out_docs / "results.md"

    def section(name: str, body: str) -> None:
        write_section(results_md, name, body, header=RESULTS_HEADER, order=RESULTS_ORDER)

    section("setup", setup_text(runner))
    if "main" in parts:
        section("accuracy", accuracy_section(runner, MODELS, BITS, cmd))
        (out_docs / "headline.md").write_text(headline(runner, cmd) + "\n")
    if "ablation" in parts:
        section("ablation", ablation_section(runner, MODELS, (6, 4, 3), cmd))
    if "ptq" in parts:
        section("ptq", ptq_section(runner, ("resnet20",), cmd))
    if "explore" in parts:
        write_section(
            out_docs / "core-results.md",
            "accuracy",
            explore_section(runner, pick_best(runner), cmd),
            header=CORE_HEADER,
            order=CORE_ORDER,
        )
    results = check_claims(runner, MODELS)
    failures = print_claims(results)
    section("claims", claims_section(results))
    return failures


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every expected claim (and the engine check) holds, else 1."""
    args = parse(argv)
    setup(0)
    cmd = command("accuracy_table", list(argv if argv is not None else sys.argv[1:]))
    small = args.quick or args.smoke
    out_docs = args.out or (QUICK_OUT if small else DOCS)
    res_dir = out_docs if small else RESULTS
    n_img = 1000 if args.quick else 300 if args.smoke else None
    runner = Runner(
        Evaluator(load_test_images(n_img, seed=0), args.engine),
        ResultCache(res_dir / "accuracy.json"),
        fresh=args.fresh,
        refresh_stale=args.refresh_stale,
    )
    if small:
        failures = run_small(runner, args, out_docs, cmd)
    else:
        failures = run_full(runner, set(args.only or PARTS), out_docs, cmd)
    print(f"wrote {out_docs / 'results.md'}")
    return 1 if failures else 0
