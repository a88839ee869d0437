"""Result fingerprints of the library: does a code change alter any result, bit for bit?

``python -m benchmarks.fingerprint [--compare DIGEST]``

Runs a few cheap end-to-end configurations on the shared models (128 seeded calibration images, one thread)
and hashes what each produces: the quantized model's ``state_dict`` (weights-only paths) or its outputs on 64
fixed test images (the FX and pt2e integer graphs). The hashes are kept per library digest in
``benchmarks/results/fingerprints.json``; the command prints, for every recorded digest, on which configurations
the current library reproduces its hashes. Where a change reproduces every hash of the digest the pages were
measured with, those pages' figures hold for it unchanged (compare on one machine: the int8 kernels and BLAS
may differ between CPUs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.harness.cache import code_digest
from benchmarks.harness.data import load_calibration, load_fp32, load_test_images
from benchmarks.harness.paths import RESULTS
from benchmarks.harness.runtime import progress, setup

STORE = RESULTS / "fingerprints.json"
IMAGES, BATCH, TEST = 128, 32, 64


def _hash_tensors(items: Sequence[tuple[str, torch.Tensor]]) -> str:
    h = hashlib.sha1()
    for name, t in items:
        h.update(name.encode())
        h.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    return h.hexdigest()[:16]


def _weights(model: str, bits: int, recipe: str) -> Callable[[], str]:
    def run() -> str:
        from requant_plugin import quantize_weights

        cal = load_calibration(IMAGES, seed=0, batch_size=BATCH) if recipe != "paper" else None
        q, _ = quantize_weights(load_fp32(model), bits, cal, recipe=recipe)
        return _hash_tensors(sorted(q.state_dict().items()))

    return run


def _outputs(q: nn.Module) -> str:
    x = torch.from_numpy(load_test_images(TEST).x)
    with torch.no_grad():
        return _hash_tensors([("out", q(x))])


def _pt2e_w4a4(model: str) -> Callable[[], str]:
    def run() -> str:
        from requant_plugin import quantize_weights
        from requant_plugin.observers.flows import quantize_pt2e
        from requant_plugin.pt2e import get_requant_quantizer

        cal = load_calibration(IMAGES, seed=0, batch_size=BATCH)
        qw, rep = quantize_weights(load_fp32(model), 4, cal, recipe="beyond-tensorrt", fold_bn=True, act_bits=4)
        q, _ = quantize_pt2e(qw, get_requant_quantizer(4, 4, weight_ranges=rep), cal, refine=True)
        return _outputs(q)

    return run


def _fx_w8a8(model: str) -> Callable[[], str]:
    def run() -> str:
        from requant_plugin.observers.flows import quantize_fx
        from requant_plugin.qconfig import get_requant_qconfig_mapping

        cal = load_calibration(IMAGES, seed=0, batch_size=BATCH)
        q, _ = quantize_fx(load_fp32(model), get_requant_qconfig_mapping(8, 8, backend="x86"), cal, "x86",
                           refine=True)
        return _outputs(q)

    return run


CONFIGS: dict[str, Callable[[], str]] = {
    "resnet20 W4 beyond": _weights("resnet20", 4, "beyond"),
    "mobilenetv2 W2 beyond": _weights("mobilenetv2", 2, "beyond"),
    "resnet56 W4 paper": _weights("resnet56", 4, "paper"),
    "resnet20 pt2e W4A4 beyond-tensorrt": _pt2e_w4a4("resnet20"),
    "resnet20 FX W8A8 refined": _fx_w8a8("resnet20"),
}


def compare(store: dict[str, dict[str, str]], current: str) -> list[str]:
    """One line per recorded digest other than ``current``: the configurations whose hashes match."""
    mine = store.get(current, {})
    lines = []
    for digest, hashes in store.items():
        if digest == current:
            continue
        shared = [k for k in hashes if k in mine]
        same = [k for k in shared if hashes[k] == mine[k]]
        verdict = "identical" if shared and len(same) == len(shared) else "differs"
        lines.append(f"{current} vs {digest}: {verdict} ({len(same)} of {len(shared)} shared configurations match)"
                     + ("" if verdict == "identical" else f" (differ: {sorted(set(shared) - set(same))})"))
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--store", type=Path, default=STORE)
    args = ap.parse_args(argv)
    setup(0, 1)
    import requant_plugin

    digest = code_digest(Path(requant_plugin.__file__).parent)  # the imported library, wherever it lives
    store: dict[str, dict[str, str]] = json.loads(args.store.read_text()) if args.store.is_file() else {}
    mine = store.setdefault(digest, {})
    for name in progress(args.configs, "fingerprints"):
        mine[name] = CONFIGS[name]()
        print(f"{digest} {name}: {mine[name]}", flush=True)
    args.store.parent.mkdir(parents=True, exist_ok=True)
    args.store.write_text(json.dumps(store, indent=1, sort_keys=True) + "\n")
    for line in compare(store, digest):
        print(line)


if __name__ == "__main__":
    main()
