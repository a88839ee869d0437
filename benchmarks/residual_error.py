"""Where the W4A4 graph's error comes from: the residual shortcut's quantization.

``python -m benchmarks.residual_error --models resnet56 resnet20 mobilenetv2 --seeds 0``

Per model and calibration seed (the development split of :mod:`benchmarks.dev_split`: 512 calibration
images from train[:40000], KL to the float network on train[40000:]), the weights of
``quantize_weights(recipe="beyond-tensorrt", fold_bn=True, act_bits=4)`` are scored five ways:

- *weights only*: float activations;
- *simulated layer inputs*: every Conv/Linear input fake-quantized at 4 bits on the activation ranges the
  calibration simulated (``activation_qparams`` on the BN-folded float model), what ``act_bits`` assumes;
- *+ shortcut 4-bit* / *+ shortcut 8-bit*: the same, and every other reader of a layer's input tensor (the
  residual add's shortcut) reads it fake-quantized on the same range at 4 / 8 bits (inserted into the
  ``torch.fx`` trace of the quantized model);
- *graph*: the converted pt2e graph, ``get_requant_quantizer(4, 4, weight_ranges=report)``, without the
  refinement, strict (``residual_bits=None``) and with ``residual_bits=8``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from benchmarks.dev_split import CAL_POOL, DOC, HEADER, calibration, load, logits, score
from benchmarks.harness.cache import code_digest
from benchmarks.harness.markdown import md_table, write_section
from benchmarks.harness.runtime import command, environment, progress, setup
from requant_plugin.range.fake_quant import fake_quant_per_tensor

COLUMNS = ("weights only", "simulated layer inputs", "+ shortcut 4-bit", "+ shortcut 8-bit", "graph",
           "graph, residual_bits=8")


def with_shortcuts(model: nn.Module, qparams: dict[str, Any]) -> fx.GraphModule:
    """``model`` traced, each layer input's other readers (not layers of ``qparams``) reading it fake-quantized
    with that layer's qparams; the submodules are ``model``'s own (their hooks still run)."""
    gm = fx.symbolic_trace(model)
    calls = {str(n.target): n for n in gm.graph.nodes if n.op == "call_module"}
    for name, qp in qparams.items():
        node = calls.get(name)
        src = node.args[0] if node is not None and node.args else None
        if not isinstance(src, fx.Node):
            continue
        others = [u for u in list(src.users)
                  if u is not node and not (u.op == "call_module" and str(u.target) in qparams)]
        if not others:
            continue
        with gm.graph.inserting_after(src):
            args = (src, qp.scale, qp.zero_point, qp.quant_min, qp.quant_max)
            fq = gm.graph.call_function(fake_quant_per_tensor, args)
        for u in others:
            u.replace_input_with(src, fq)
    gm.recompile()
    return gm


def measure(model: nn.Module, cal: list[torch.Tensor], dev: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
            ) -> dict[str, float]:
    """The KL of each column of :data:`COLUMNS`."""
    from requant_plugin.observers.flows import quantize_pt2e
    from requant_plugin.pt2e import get_requant_quantizer
    from requant_plugin.ptq import quantize_weights
    from requant_plugin.ptq.activation_sim import activation_qparams, fake_quant_activations
    from requant_plugin.ptq.bn_fold import fold_bn_

    x_dev, y_dev, ref = dev
    qw, rep = quantize_weights(model, 4, recipe="beyond-tensorrt", calibration_data=cal, fold_bn=True, act_bits=4)
    folded = copy.deepcopy(model).eval()
    fold_bn_(folded)
    names = list(rep.act_bits)
    qp4, qp8 = activation_qparams(folded, names, cal, 4), activation_qparams(folded, names, cal, 8)
    out = {"weights only": score(ref, logits(qw, x_dev), y_dev)["kl"]}
    with fake_quant_activations(qw, qp4):
        out["simulated layer inputs"] = score(ref, logits(qw, x_dev), y_dev)["kl"]
        for label, qp in (("+ shortcut 4-bit", qp4), ("+ shortcut 8-bit", qp8)):
            out[label] = score(ref, logits(with_shortcuts(qw, qp), x_dev), y_dev)["kl"]
    for label, residual in (("graph", None), ("graph, residual_bits=8", 8)):
        quantizer = get_requant_quantizer(4, 4, weight_ranges=rep, residual_bits=residual)
        q = quantize_pt2e(qw, quantizer, cal, refine=False)[0]
        q.eval()  # an exported graph's patched eval() returns None
        out[label] = score(ref, logits(q, x_dev), y_dev)["kl"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.residual_error",
                                 description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet56", "resnet20", "mobilenetv2"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="print the table instead of writing the page")
    args = ap.parse_args(argv)
    from requant_plugin.data import load_cifar10

    setup(0, args.threads)
    ds = load_cifar10()
    x_dev, y_dev = ds.x_train[CAL_POOL:], ds.y_train[CAL_POOL:]
    rows = []
    for m, seed in progress([(m, s) for m in args.models for s in args.seeds], "residual error"):
        net = load(m)
        kl = measure(net, calibration(ds.x_train, seed), (x_dev, y_dev, logits(net, x_dev)))
        rows.append([m, str(seed), *(f"{kl[c]:.4f}" for c in COLUMNS)])
    cmd = command("residual_error", argv if argv is not None else sys.argv[1:])
    body = ("W4A4 weights (`beyond-tensorrt`, `act_bits=4`), KL(p_float || p_quant) on the 10,000 dev images "
            "(lower is closer to the float network); no activation-range refinement.\n\n"
            + md_table(["model", "seed", *COLUMNS], rows, align="ll" + "r" * len(COLUMNS))
            + f"\n\nLibrary digest {code_digest()}. Command: `{cmd}`"
            + f"\n\nMachine: {environment()}\n")
    if args.no_write:
        print(body)
        return 0
    write_section(DOC, "dev-shortcut", body, header=HEADER)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
