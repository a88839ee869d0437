"""The Findings section of docs/results-beyond.md: the measured effect of each ingredient, as
ranges of accuracy differences over the table's columns (single runs and calibration repeats)."""

from __future__ import annotations

from typing import Any

from benchmarks.harness.markdown import DASH

#: ``(row key, model, bits) -> result`` (``row key@seed`` for the calibration repeats)
Res = dict[tuple[str, str, int], Any]


def _span(res: Res, a: str, b: str, cols: list[tuple[str, int]], bits: int | None = None) -> str:
    """``"x to y"``: the range of ``acc(a) - acc(b)`` over the columns (optionally one bit width)."""
    d = [res[(a, m, bb)]["acc"] - res[(b, m, bb)]["acc"] for m, bb in cols
         if (bits is None or bb == bits) and (a, m, bb) in res and (b, m, bb) in res]
    if not d:
        return DASH
    lo, hi = min(d), max(d)
    return f"{lo:+.2f}" if abs(hi - lo) < 0.005 else f"{lo:+.2f} to {hi:+.2f}"


def _seed_mean(seeds: Res, key: str, m: str, b: int) -> float | None:
    """Mean top-1 of row ``key`` over the calibration repeats."""
    accs = [r["acc"] for (k, mm, bb), r in seeds.items() if k.split("@")[0] == key and mm == m and bb == b]
    return sum(accs) / len(accs) if accs else None


def _seed_span(seeds: Res, a: str, b: str, cols: list[tuple[str, int]]) -> str:
    """``"x to y"``: the range of the repeat means' differences ``a - b`` over the columns."""
    d = [x - y for x, y in ((_seed_mean(seeds, a, m, bb), _seed_mean(seeds, b, m, bb)) for m, bb in cols)
         if x is not None and y is not None]
    return DASH if not d else f"{min(d):+.2f} to {max(d):+.2f}"


def findings(res: Res, cols: list[tuple[str, int]], fp32: dict[str, float], seeds: Res) -> list[str]:
    """The measured effect of each ingredient, as ranges over the table's columns."""
    if ("beyond", cols[0][0], cols[0][1]) not in res:
        return []
    out = ["## Findings (ranges over the four columns of the tables above)", ""]
    out.append(f"* Bias correction on the paper's own setting: W4 {_span(res, 'paper-bc', 'paper', cols, 4)}, "
               f"W3 {_span(res, 'paper-bc', 'paper', cols, 3)} points; the data-free BN variant: W4 "
               f"{_span(res, 'paper-bn', 'paper', cols, 4)}, W3 {_span(res, 'paper-bn', 'paper', cols, 3)}.")
    out.append(f"* The output objective on the paper's setting: W4 {_span(res, 'paper-out', 'paper', cols, 4)}, "
               f"W3 {_span(res, 'paper-out', 'paper', cols, 3)}; with bias correction too: W4 "
               f"{_span(res, 'paper-out-bc', 'paper', cols, 4)}, W3 {_span(res, 'paper-out-bc', 'paper', cols, 3)}; "
               f"plus feedback rounding: W4 {_span(res, 'paper-out-bc-fb', 'paper', cols, 4)}, W3 "
               f"{_span(res, 'paper-out-bc-fb', 'paper', cols, 3)}.")
    out.append(f"* Sequential instead of plain bias correction (weight objective, per channel): W4 "
               f"{_span(res, 'pc-seq', 'pc-bc', cols, 4)}, W3 {_span(res, 'pc-seq', 'pc-bc', cols, 3)}: matching "
               "the float model's mean outputs layer by layer also folds the upstream error into each bias (our "
               "reading of the collapse at 3 bits, not tested further). Plain correction is the default.")
    out.append(f"* Feedback rounding on top of output objective + bias correction: W4 "
               f"{_span(res, 'beyond', 'pc-out-bc', cols, 4)}, W3 {_span(res, 'beyond', 'pc-out-bc', cols, 3)}: "
               "the largest single step at 3 bits once the range is chosen by the output error.")
    out.append(f"* Once feedback rounding is in, removing the output objective changes accuracy by "
               f"{_span(res, 'pc-fb-bc', 'beyond', cols)} and removing bias correction by "
               f"{_span(res, 'pc-out-fb', 'beyond', cols)} points (single runs); over the calibration repeats "
               f"the means change by {_seed_span(seeds, 'pc-fb-bc', 'beyond', cols)} and "
               f"{_seed_span(seeds, 'pc-out-fb', 'beyond', cols)}. Both are small next to the noise; both "
               "are kept in the recipe (they cost little).")
    out.append(f"* Grids: the symmetric TensorRT grid {_span(res, 'beyond-trt', 'beyond', cols)}, the transform "
               f"codebook (p = 0.75) {_span(res, 'beyond-cb', 'beyond', cols)}, searching p "
               f"{_span(res, 'beyond-cb-p', 'beyond-cb', cols)}, snapping the codebook to INT8 "
               f"{_span(res, 'beyond-cb-int8', 'beyond-cb', cols)} points against their reference rows.")
    out.append("")
    return out


_FP32_KIB: dict[str, float] = {}
