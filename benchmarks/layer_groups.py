"""Where a low-bit network's error comes from: the ``beyond`` recipe with one group of layers kept at 8 bits
(``overrides``), scored on the development split of :mod:`benchmarks.dev_split` (never the test set).

``python -m benchmarks.layer_groups --models mobilenetv2 --bits 2 --seeds 0 1``

The groups: ``first`` (the stem convolution), ``classifier`` (the last Linear), ``last-conv`` (the last
convolution), ``depthwise`` (grouped convolutions), and by role inside the blocks: on MobileNetV2 ``expand``
(the 1x1 convolution opening an inverted residual) and ``project`` (the 1x1 convolution closing it, whose
output joins the residual stream without an activation); on the ResNets ``conv1`` / ``conv2`` (each basic
block's first / second convolution). The layers are those ``quantize_weights`` quantizes
(:func:`~requant_plugin.ptq.quantizable_layers`). The table's "KL / none" is the share of the development KL
left when that group is 8-bit.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence

import numpy as np
from torch import nn

from benchmarks.dev_split import DOC, calibration, load, logits, score, split
from benchmarks.harness.cache import ResultCache, code_digest
from benchmarks.harness.markdown import fmt, md_table, write_section
from benchmarks.harness.paths import RESULTS
from benchmarks.harness.runtime import command, environment, progress
from requant_plugin.ptq import quantizable_layers, quantize_weights
from requant_plugin.ptq.plan import layer_weight

CACHE = RESULTS / "layer_groups.json"

Rule = Callable[[str, nn.Module], bool]

#: Role rules on the module name (the zoo's MobileNetV2 and CIFAR ResNets).
ROLES: dict[str, Rule] = {
    "depthwise": lambda n, m: isinstance(m, nn.Conv2d) and m.groups > 1,
    "expand": lambda n, m: n.endswith("conv.0.0") and isinstance(m, nn.Conv2d) and m.groups == 1,
    "project": lambda n, m: isinstance(m, nn.Conv2d) and m.groups == 1 and (
        n.endswith("conv.2.0") or n.endswith("conv.1.0")),  # features.1 has no expansion: its conv.1.0 projects
    "conv1": lambda n, m: n.endswith(".conv1") and n.startswith("layer"),
    "conv2": lambda n, m: n.endswith(".conv2") and n.startswith("layer"),
}


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """The non-empty groups of ``model``'s quantized layers (see the module docstring); ``none`` is empty."""
    layers = quantizable_layers(model)
    convs = [n for n, m in layers if isinstance(m, nn.Conv2d)]
    groups: dict[str, list[str]] = {"none": [], "first": [layers[0][0]]}
    if isinstance(layers[-1][1], nn.Linear):
        groups["classifier"] = [layers[-1][0]]
    if convs and convs[-1] != layers[0][0]:
        groups["last-conv"] = [convs[-1]]
    for role, rule in ROLES.items():
        names = [n for n, m in layers if rule(n, m)]
        if names:
            groups[role] = names
    return groups


def table(cache: ResultCache, digest: str, models: Sequence[str], bits: Sequence[int], seeds: Sequence[int],
          groups: dict[str, dict[str, list[str]]]) -> str:
    """One row per (model, bits, group): KL averaged over the seeds and its ratio to the ``none`` row."""
    rows = []
    for m in models:
        for b in bits:
            base: float | None = None
            for g, names in groups[m].items():
                got = [cache.get(dict(model=m, bits=b, seed=s, group=g, code=digest)) for s in seeds]
                done = [r for r in got if r is not None]
                if not done:
                    continue
                kl = float(np.mean([r["kl"] for r in done]))
                base = kl if g == "none" else base
                rows.append([m, f"W{b}", g, len(names), int(done[0]["weights"]), len(done),
                             f"{kl:.5f}", fmt(kl / base, 3) if base else "-",
                             fmt(float(np.mean([r["agree"] for r in done])))])
    return md_table(["model", "bits", "8-bit group", "layers", "weights", "seeds", "KL", "KL / none", "agree %"],
                    rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.layer_groups", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mobilenetv2"])
    ap.add_argument("--bits", type=int, nargs="+", default=[2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--section", default=None, help="section name in docs/dev-split.md")
    args = ap.parse_args(argv)
    x_train, x_dev, y_dev = split(args.threads)
    digest, cache = code_digest(), ResultCache(CACHE)
    nets = {m: load(m) for m in args.models}
    groups = {m: layer_groups(net) for m, net in nets.items()}
    sizes = {m: {n: layer_weight(mod).numel() for n, mod in quantizable_layers(net)} for m, net in nets.items()}
    jobs = [(m, b, s, g) for m in args.models for b in args.bits for s in args.seeds for g in groups[m]]
    refs = {}
    for m, b, s, g in progress(jobs, "layer groups"):
        key = dict(model=m, bits=b, seed=s, group=g, code=digest)
        if cache.get(key) is not None:
            continue
        net = nets[m]
        if m not in refs:
            refs[m] = logits(net, x_dev)
        names = groups[m][g]
        q, _ = quantize_weights(net, "beyond", bits=b, calibration_data=calibration(x_train, s),
                                overrides={n: {"bits": 8} for n in names})
        result = {**score(refs[m], logits(q, x_dev), y_dev), "weights": float(sum(sizes[m][n] for n in names))}
        if not all(math.isfinite(x) for x in result.values()):
            raise SystemExit(f"non-finite result for {key}: {result}")
        cache.put(key, result)
    body = table(cache, digest, args.models, args.bits, args.seeds, groups)
    argv_text = command("layer_groups", argv if argv is not None else sys.argv[1:])
    body += f"\n\nLibrary digest {digest}. Command: `{argv_text}`\n\nMachine: {environment()}\n"
    name = args.section or f"dev-groups-{'-'.join(args.models)}-w{''.join(map(str, args.bits))}"
    write_section(DOC, name, body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
