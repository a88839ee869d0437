"""The ordering claims of the accuracy tables: which method beats which, where; checked on every
run (``--quick``/``--smoke`` exit non-zero when an expected claim fails on their subset)."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.accuracy_table.configs import MODELS, SHORT, Config
from benchmarks.accuracy_table.run import Runner
from benchmarks.harness.runtime import command


@dataclass(frozen=True)
class Claim:
    """``better`` beats ``worse`` (top-1) on every measured cell of ``bits`` x ``models``.

    ``expected=True``: the full tables support it and ``--quick``/``--smoke`` fail when it does not
    hold on their subset; ``expected=False``: a claim one would like to make that the full tables
    refute, reported so that nobody makes it.
    """

    text: str
    better: str
    worse: str
    bits: tuple[int, ...]
    per_channel: bool = False
    fold_bn: bool = False
    models: tuple[str, ...] = MODELS
    expected: bool = True


CLAIMS = (
    Claim("REQuant alpha + sqrt beats min-max at W4 (per tensor)", "requant_sqrt", "minmax", (4,)),
    Claim(
        "REQuant alpha + sqrt beats min-max at W3 on ResNet-20 (per tensor)",
        "requant_sqrt",
        "minmax",
        (3,),
        models=("resnet20",),
    ),
    Claim(
        "REQuant alpha beats min-max at W4 and W3 on ResNet-20 (per tensor)",
        "requant",
        "minmax",
        (4, 3),
        models=("resnet20",),
    ),
    Claim(
        "REQuant alpha + sqrt beats min-max at W4 and W3 (per tensor, BN folded)",
        "requant_sqrt",
        "minmax",
        (4, 3),
        fold_bn=True,
    ),
    Claim(
        "REQuant alpha + sqrt beats the ModelOpt-style grid at W4 and W3 (per tensor)",
        "requant_sqrt",
        "modelopt_mse",
        (4, 3),
    ),
    Claim(
        "REQuant alpha + sqrt beats min-max at W3 on ResNet-56 (per tensor)",
        "requant_sqrt",
        "minmax",
        (3,),
        models=("resnet56",),
        expected=False,
    ),
    Claim(
        "REQuant alpha beats min-max at W4 and W3 on ResNet-56 (per tensor)",
        "requant",
        "minmax",
        (4, 3),
        models=("resnet56",),
        expected=False,
    ),
    Claim(
        "REQuant alpha + sqrt beats Brevitas MSE at W4 and W3 (per tensor)",
        "requant_sqrt",
        "brevitas_mse",
        (4, 3),
        expected=False,
    ),
    Claim(
        "REQuant alpha + sqrt beats percentile clipping at W4 and W3 (per tensor)",
        "requant_sqrt",
        "percentile",
        (4, 3),
        expected=False,
    ),
)


def check_claims(runner: Runner, models: tuple[str, ...]) -> list[tuple[Claim, bool, list[str]]]:
    """Evaluate every claim on the measured cells; returns (claim, holds, cell notes)."""
    out = []
    for cl in CLAIMS:
        notes, ok, seen = [], True, False
        for m in models:
            if m not in cl.models:
                continue
            for b in cl.bits:
                a = runner.acc(Config(m, cl.better, b, cl.per_channel, cl.fold_bn))
                c = runner.acc(Config(m, cl.worse, b, cl.per_channel, cl.fold_bn))
                if a is None or c is None:
                    continue
                seen = True
                notes.append(f"{SHORT[m]} W{b}: {a:.2f} vs {c:.2f}")
                ok &= a > c
        if seen:
            out.append((cl, ok, notes))
    return out


# --------------------------------------------------------------------------- markdown


def claims_section(results: list[tuple[Claim, bool, list[str]]]) -> str:
    """The "Ordering claims" section of docs/results.md: expected claims, then refuted ones."""
    held = [
        f"- {'holds' if ok else '**FAILS**'}: {cl.text} ({'; '.join(notes)})"
        for cl, ok, notes in results
        if cl.expected
    ]
    refuted = [
        f"- {'does not hold' if not ok else '**holds now**'}: {cl.text} ({'; '.join(notes)})"
        for cl, ok, notes in results
        if not cl.expected
    ]
    return (
        f"## Ordering claims\n\nChecked on the subset by `{command('accuracy_table', ['--quick'])}` "
        "(and `--smoke` in the test suite), which exit non-zero when one fails:\n\n"
        + "\n".join(held)
        + "\n\nClaims the full tables refute (do not make them):\n\n"
        + "\n".join(refuted)
    )


def print_claims(results: list[tuple[Claim, bool, list[str]]]) -> int:
    """Print one line per claim; returns the number of expected claims that fail."""
    failures = 0
    for cl, ok, notes in results:
        failures += cl.expected and not ok
        tag = ("HOLDS" if ok else "FAILS") if cl.expected else ("refuted as expected" if not ok else "NOW HOLDS")
        print(f"claim {tag}: {cl.text} [{'; '.join(notes)}]")
    return failures
