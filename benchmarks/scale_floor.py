"""pt2e's smallest activation scale (``eps``) on networks whose activations are tiny.

``python -m benchmarks.scale_floor [--archs efficientnet_b0 mobilenet_v3_small resnet18] [--eps-small 2**-20]``

Each architecture of the coverage matrix (random weights, ``benchmarks.archs``, 32 px, 10 classes, the
matrix's inputs: 2 calibration batches of 4 standard-normal images, 16 test images) goes through
``quantize_pt2e`` with the x86 inductor quantizer at W8A8, with REQuant's observers and with torchao's default
observers (``get_torchao_default_quantization_config``), each at pt2e's default ``eps = 2**-12`` and at a
smaller one. Per cell: the coverage matrix's max-normalised output error ``max |y_q - y| / max |y|``, the top-1
agreement with the float model on the test images, and how many REQuant activation observers issued a
``ScaleFloorWarning`` (the range needs a scale of ``eps / 4`` or less). The table goes to
``docs/observers-results.md`` (section ``scale-floor``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.coverage.cells import compare
from benchmarks.coverage.models import build_model, make_inputs
from benchmarks.harness.cache import code_digest
from benchmarks.harness.markdown import fmt, md_table, write_section
from benchmarks.harness.paths import DOCS
from benchmarks.harness.runtime import command, environment, progress, setup
from requant_plugin.observers import ScaleFloorWarning

DOC = DOCS / "observers-results.md"
SIZE, BATCHES, BATCH, TEST, CLASSES = 32, 2, 4, 16, 10
DEFAULT_EPS = 2.0**-12


def measure(arch: str, observers: str, eps: float) -> dict[str, Any]:
    """One cell: quantize a fresh seeded copy of ``arch`` and compare it with the float model."""
    from requant_plugin.observers.flows import quantize_pt2e
    from requant_plugin.pt2e import get_requant_quantizer, get_torchao_default_quantization_config, make_quantizer

    model = build_model(arch, SIZE, 0, CLASSES)
    inputs = make_inputs(SIZE, batches=BATCHES, batch_size=BATCH, test=TEST)
    with torch.no_grad():
        ref = model(inputs.test)
    if observers == "requant":
        quantizer = get_requant_quantizer(8, 8, backend="x86_inductor", eps=eps)
    else:
        quantizer = make_quantizer(get_torchao_default_quantization_config(8, 8, eps=eps), "x86_inductor")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always", ScaleFloorWarning)
        q, _ = quantize_pt2e(copy.deepcopy(model), quantizer, inputs.calibration)
        with torch.no_grad():
            y = q(inputs.test)
    seconds = time.perf_counter() - t0
    floored = len({str(w.message) for w in rec if issubclass(w.category, ScaleFloorWarning)})
    cmp = compare(y, ref)
    return {"error": cmp["max_norm"], "agree": cmp["agree"], "floored": floored, "seconds": seconds}


def table(results: dict[tuple[str, str, float], dict[str, Any]], archs: Sequence[str], small: float) -> str:
    """Rows per architecture and observers, columns per eps."""
    rows = []
    for arch in archs:
        for obs, label in (("requant", "REQuant"), ("default", "torchao default")):
            row = [arch, label]
            for eps in (DEFAULT_EPS, small):
                r = results[(arch, obs, eps)]
                warned = f", {r['floored']} warned" if obs == "requant" else ""
                row.append(f"{fmt(r['error'], 3)} / {r['agree']:.0f}%{warned}")
            rows.append(row)
    return md_table(["arch", "activation observers", "eps = 2**-12 (default)", f"eps = {small:.3g}"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["efficientnet_b0", "mobilenet_v3_small", "resnet18"])
    ap.add_argument("--eps-small", type=float, default=2.0**-20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    setup(0, args.threads)
    cells = [(a, o, e) for a in args.archs for o in ("requant", "default") for e in (DEFAULT_EPS, args.eps_small)]
    results = {}
    for cell in progress(cells, "scale floor"):
        results[cell] = measure(*cell)
        r = results[cell]
        print(f"{cell[0]} {cell[1]} eps={cell[2]:.3g}: error {r['error']:.3f}, agreement {r['agree']:.0f} %, "
              f"{r['floored']} observers warned, {r['seconds']:.1f} s", flush=True)
    cmd = command("scale_floor", sys.argv[1:] if argv is None else argv)
    body = "\n".join([
        "## pt2e's smallest activation scale on tiny activations",
        "",
        f"Command: `{cmd}` (library digest {code_digest()})",
        "",
        "x86 inductor quantizer, W8A8, `quantize_pt2e`; random weights (`benchmarks.archs`), 32 px, 10 classes, "
        f"{BATCHES} calibration batches of {BATCH} and {TEST} test standard-normal images (the coverage matrix's "
        "inputs). Each cell: max-normalised output error / top-1 agreement with the float model; for REQuant's "
        "observers also how many of them issued a `ScaleFloorWarning` (an observed range needing a scale of "
        "`eps / 4` or less).",
        "",
        table(results, args.archs, args.eps_small),
        "",
        f"Machine: {environment()}",
    ])
    print(body)
    if not args.no_write:
        write_section(DOC, "scale-floor", body)


if __name__ == "__main__":
    main()
