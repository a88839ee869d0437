"""The ``requant`` command (also ``python -m requant_plugin``).

Sub-commands:

* ``requant quantize``: calibrate, quantize and evaluate a model (FP32 vs min-max vs REQuant),
  print the per-layer and accuracy tables, optionally write a report folder and a
  TensorRT-ready ONNX;
* ``requant demo``: the same job on an embedded default (shared CIFAR-10 + ResNet-20, else a
  SmallCNN trained in seconds);
* ``requant inspect MODEL.onnx``: the TensorRT Q/DQ rules check on any ONNX file.

Exit status: 0 success, 1 ``inspect`` found rule errors, 2 a user error (one line on stderr,
no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import __version__
from .deps import require
from .options import MAX_BITS, MIN_BITS, check_bits
from .pipeline.errors import USER_ERRORS, UsageError

__all__ = ["build_parser", "main"]

HELP_WIDTH = 96
_DATA_HELP = "cifar10, fashion-mnist, digits, or a folder with CIFAR-style test.npz/train_*.npz"


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line: ``prog: error: ... (try 'prog --help')``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (try '{self.prog} --help')\n")


_Formatter = functools.partial(argparse.RawDescriptionHelpFormatter, width=HELP_WIDTH)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _bits(text: str) -> int:
    value = _positive_int(text)
    try:
        return check_bits(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bit width must be in {MIN_BITS}..{MAX_BITS}, got {value}") from None


def _add_quantize(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .pipeline import model_choices
    from .ptq.recipes import RECIPES

    p = sub.add_parser(
        "quantize", formatter_class=_Formatter,
        help="quantize a model's weights with REQuant and compare with min-max",
        description="Quantize the weights of every Conv/Linear layer with REQuant, evaluate FP32 vs\n"
                    "min-max vs REQuant, print the per-layer and accuracy tables, and optionally write\n"
                    "a report folder and a TensorRT-ready ONNX.",
        epilog="examples:\n"
               "  requant quantize --data digits --bits 8 4 --report reports/digits\n"
               "  requant quantize --model resnet20 --data cifar10 --bits 4 --per-channel "
               "--export r20.onnx\n"
               "  requant quantize --model resnet20 --bits 4 3 --recipe beyond",
    )
    p.add_argument("--model", metavar="NAME",
                   help=f"{', '.join(model_choices())}, or resnet<6n+2> (e.g. resnet110) (default: resnet20 for "
                        "3x32x32 data, "
                        "else small-cnn, trained here unless --weights is given)")
    p.add_argument("--weights", metavar="PATH", help="state_dict file (default: the shared models folder)")
    p.add_argument("--data", metavar="NAME|PATH", help=f"{_DATA_HELP} (default: best available offline)")
    p.add_argument("--bits", metavar="B", type=_bits, nargs="+", default=[4],
                   help="weight bit widths to evaluate, e.g. --bits 8 6 4 (default: 4); the lowest "
                        "gets the per-layer table, the L(alpha) plots and the export")
    p.add_argument("--space", choices=("uniform", "sqrt"), default="sqrt",
                   help="sqrt: also evaluate REQuant on sign(w)*sqrt|w|; uniform: the alpha search "
                        "alone (default: sqrt)")
    p.add_argument("--per-channel", action="store_true", help="one range per output channel")
    p.add_argument("--symmetric", action="store_true", help="symmetric grid (zero point 0)")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convs first")
    p.add_argument("--act-bits", metavar="B", type=_bits,
                   help="also fake-quantize every Conv/Linear input per tensor (calibrated ranges)")
    p.add_argument("--end-bits", metavar="B", type=_bits,
                   help="the first and last Conv/Linear layers at B bits in every row: their weights and, "
                        "with --act-bits, their inputs (e.g. --bits 4 --act-bits 4 --end-bits 8)")
    p.add_argument("--recipe", metavar="NAME", choices=sorted(RECIPES),
                   help=f"also evaluate a named recipe at every width ({', '.join(sorted(RECIPES))}; e.g. "
                        "beyond: per-channel output objective, error-feedback rounding, bias correction), "
                        "calibrated on the train images of --calib-images")
    p.add_argument("--mixed-precision", action="store_true",
                   help="with --recipe: also evaluate the recipe at B bits per weight on average for each --bits "
                        "B, each layer's width (2..8) chosen by its estimated share of the output's KL divergence")
    p.add_argument("--calib-images", metavar="N", type=_positive_int, default=256,
                   help="train images for activation calibration, --recipe and export (default: 256)")
    p.add_argument("--test-limit", metavar="N", type=_positive_int,
                   help="evaluate on a seeded class-stratified subset of N test images")
    p.add_argument("--export", metavar="FILE.onnx",
                   help="write a TensorRT-ready ONNX (symmetric per-channel Q/DQ) and verify it")
    p.add_argument("--export-bits", metavar="B", type=_bits,
                   help="weight bits of the export (default: the lowest --bits)")
    p.add_argument("--report", metavar="DIR",
                   help="write report.md, results.json and PNG plots into DIR")
    p.add_argument("--seed", type=int, default=0, help="seed for subsets and training (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _add_demo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo", formatter_class=_Formatter,
        help="run the whole job on an embedded default (no arguments needed)",
        description="The main job on an embedded default: the shared CIFAR-10 + pretrained\n"
                    "ResNet-20 when found ($REQUANT_SHARED_DIR or a 'shared' folder beside the\n"
                    "repository; accuracy on a 2,000-image stratified test subset), otherwise a\n"
                    "SmallCNN trained here on Fashion-MNIST (Debian package) or scikit-learn's\n"
                    "digits. W8/W6/W4 min-max vs REQuant vs the beyond recipe, tables, report\n"
                    "folder, W8A8 ONNX export for TensorRT and its verification.",
    )
    p.add_argument("--report", metavar="DIR", default="reports/demo",
                   help="report folder (default: reports/demo)")
    p.add_argument("--export", metavar="FILE.onnx",
                   help="ONNX path (default: <report>/<model>_w8a8.onnx)")
    p.add_argument("--data", choices=("cifar10", "fashion-mnist", "digits"),
                   help="force a data set instead of the automatic choice")
    p.add_argument("--test-limit", metavar="N", type=_positive_int, default=2000,
                   help="test images for the accuracy table (default: 2000)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _add_inspect(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "inspect", formatter_class=_Formatter,
        help="check an ONNX file against TensorRT's explicit-quantization rules",
        description="Check any ONNX file against TensorRT's Q/DQ rules (int8 zero points equal to 0,\n"
                    "positive scales, per-channel scales only on constant weights, opset >= 13, a DQ\n"
                    "on both inputs of every Conv/Gemm/MatMul, ...). Exit status 0 when no rule error\n"
                    "is found (warnings mark layers left in float), 1 otherwise.",
    )
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX file to check")


def build_parser() -> argparse.ArgumentParser:
    """The ``requant`` argument parser with its three sub-commands."""
    parser = _Parser(
        prog="requant", formatter_class=_Formatter,
        description="REQuant post-training quantization: range estimation by a locally convex\n"
                    "1-D search, min-max comparison, reports and TensorRT-ready ONNX export.",
        epilog="run 'requant demo' for a complete example; 'requant <command> --help' for options",
    )
    parser.add_argument("--version", action="version", version=f"requant-plugin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{quantize,demo,inspect}")
    _add_quantize(sub)
    _add_demo(sub)
    _add_inspect(sub)
    return parser


def _command_line(argv: Sequence[str]) -> str:
    return "requant " + " ".join(shlex.quote(a) for a in argv)


def _quantize(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .pipeline import PipelineConfig, run_pipeline

    cfg = PipelineConfig(
        data=args.data, model=args.model, weights=args.weights, bits=tuple(args.bits), space=args.space,
        per_channel=args.per_channel, symmetric=args.symmetric, fold_bn=args.fold_bn,
        act_bits=args.act_bits, end_bits=args.end_bits, recipe=args.recipe,
        mixed_precision=args.mixed_precision, export=args.export,
        export_bits=args.export_bits, report=args.report,
        calib_images=args.calib_images, test_limit=args.test_limit, seed=args.seed,
        progress=not args.no_progress, command=_command_line(argv),
    )
    run_pipeline(cfg)
    return 0


def _demo(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .demo import run_demo

    run_demo(args.report, args.export, data=args.data, test_limit=args.test_limit,
             progress=not args.no_progress, command=_command_line(argv))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if not path.is_file():
        raise UsageError(f"ONNX file not found: {path}")
    onnx = require("onnx", "requant inspect")
    export = require("requant_plugin.export", "requant inspect")

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # any parse failure is the user's file
        raise UsageError(f"{path} is not a readable ONNX file: {str(exc).splitlines()[0]}") from exc
    ops = [n.op_type for n in model.graph.node]
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    print(f"{path}: opset {opset}, {len(ops)} nodes, {ops.count('QuantizeLinear')} QuantizeLinear, "
          f"{ops.count('DequantizeLinear')} DequantizeLinear, "
          f"{sum(op in ('Conv', 'ConvTranspose', 'Gemm', 'MatMul') for op in ops)} Conv/Gemm/MatMul")
    violations = list(export.check_tensorrt_compat(str(path)))
    errors = [v for v in violations if getattr(v, "severity", "error") == "error"]
    warnings = len(violations) - len(errors)
    for v in violations:
        print(f"  - {v}")
    if not errors:
        note = f" ({warnings} warning(s) above: layers left in float)" if warnings else ""
        print(f"TensorRT rules check: OK, no error{note}")
        return 0
    print(f"TensorRT rules check: {len(errors)} error(s), {warnings} warning(s): TensorRT would reject "
          "this graph or miss the INT8 fusion")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``requant`` console script; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "quantize":
            return _quantize(args, args_list)
        if args.command == "demo":
            return _demo(args, args_list)
        return _inspect(args)
    except USER_ERRORS as exc:  # UsageError, or a missing optional package (MissingDependency)
        message = " ".join(str(exc).split())  # always one line
        print(f"requant {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("requant: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
