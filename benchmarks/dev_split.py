"""Recipe choices on a development split, never on the test set: the first 40,000 CIFAR-10 training
images give the calibration sets, the last 10,000 (images 40,000-49,999) measure how closely the
quantized network follows its float original.

``python -m benchmarks.dev_split --models resnet20 mobilenetv2 --bits 2 --seeds 0 1 2 --variants recipe rows32k``

Per (model, bits, calibration seed, variant): ``quantize_weights(model, "beyond", bits=..., **variant)``
(or, for the ``pt2e-a4*`` / ``fx-a8*`` variants, the integer-graph / ``convert_fx`` flow with the activation
range refinement's settings of :data:`REFINE`)
with 512 images drawn by the seed from the first 40,000 (batches of 32), then on the 10,000 dev images
the mean KL divergence ``KL(p_float || p_quant)`` of the softmax outputs, the top-1 agreement with the
float model and the dev top-1 against the labels (the shared ResNets and MobileNetV2 saw these images in
training; the held-out VGG, ``vgg``, did not: it was trained on the first 45,000). Results are cached in
``benchmarks/results/dev_split.json`` under the library's code digest; the table goes to
``docs/dev-split.md`` (variants side by side, ratios of KL to the first variant).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.harness.cache import ResultCache, code_digest
from benchmarks.harness.markdown import fmt, md_table, write_section
from benchmarks.harness.paths import DOCS, RESULTS
from benchmarks.harness.runtime import command, environment, progress, setup
from requant_plugin.refine import LAYER_FACTORS

CACHE = RESULTS / "dev_split.json"
DOC = DOCS / "dev-split.md"
CAL_POOL = 40_000  # calibration images are drawn from train[:CAL_POOL]; the dev images are train[CAL_POOL:]
IMAGES, BATCH = 512, 32

#: Named overrides of the ``beyond`` recipe (what a user would pass to ``quantize_weights``).
VARIANTS: dict[str, dict[str, Any]] = {
    "recipe": {},
    "no-widen": {"feedback_widen": (1.0,)},
    "widen-1.8": {"feedback_widen": tuple(round(1.0 + 0.1 * i, 1) for i in range(9))},
    "widen-2.0": {"feedback_widen": (1.0, 1.15, 1.3, 1.5, 1.75, 2.0)},
    # "auto" at 3 bits and more before it became per layer, "auto" at 2 bits, every row
    "rows8k": {"calibration_rows": 8192}, "rows32k": {"calibration_rows": 32_768},
    "rows-all": {"calibration_rows": None},
    "refit": {"feedback_refit": True}, "no-refit": {"feedback_refit": False},  # the recipe's since it joined beyond
    "cd1": {"feedback_sweeps": 1}, "cd2": {"feedback_sweeps": 2}, "cd4": {"feedback_sweeps": 4},
    "ends8": {"end_bits": 8},  # first and last layer at 8 bits (the BRECQ / QDrop convention)
    # benchmarks.equalization before the search (the model's float parts rescaled)
    "cle-0.25": {"equalize": 0.25}, "cle-0.5": {"equalize": 0.5}, "cle-1": {"equalize": 1.0},
    "damp-0.01": {"target_damp": 0.01},  # the fixed target damp, the recipe's before it was cross-validated
    # the cross-validated candidates extended above the recipe's largest (0.3), which many layers choose
    "damps-to-1": {"target_damp": (0.01, 0.03, 0.1, 0.3, 1.0)},
    # the 512 images and their mirror images (horizontal flips): twice the rows, no new image (and every row)
    "flip": {"hflip": True}, "flip-rows-all": {"hflip": True, "calibration_rows": None},
}
#: Refinement settings (:class:`requant_plugin.refine.RefineConfig` fields) compared: the 512 calibration images
#: with ``tol=0.01`` (the defaults before the choice), the first half of them (``images=256``: 8 of the 16
#: batches), the coarser ``tol=0.02``, and both (the defaults since).
REFINE: dict[str, dict[str, Any]] = {
    "": {"tol": 0.01, "images": None},
    "-half": {"tol": 0.01, "images": 256},
    "-tol02": {"tol": 0.02, "images": None},
    "-half-tol02": {"tol": 0.02, "images": 256},
}
#: ``pt2e-a4*``: ``quantize_weights(recipe="beyond-tensorrt", act_bits=4)`` (``--bits`` sets the weights),
#: ``prepare_pt2e`` with REQuant observers, ``refine_activation_ranges``, ``convert_pt2e`` (the results-peers
#: ``pt2e`` row); ``fx-a8*``: W8A8 ``get_requant_qconfig_mapping()`` observers through ``convert_fx`` (x86) with
#: the refinement (the observers-accuracy "refined act. ranges" cell).
PT2E_VARIANTS: dict[str, dict[str, Any]] = {f"pt2e-a4{k}": {"act_bits": 4, **v} for k, v in REFINE.items()}
#: the classifier reading the pooled features through the pool input's observer (torchao's annotation; the
#: default before ``ObserverSpec.pooled_input``), against its own observer after the pool (the default below A8)
PT2E_VARIANTS["pt2e-a4-pooled-shared"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"], "pooled_input": "shared"}
#: the operands of residual adds (the shortcut) on their own 8-bit observers (``ObserverSpec.residual_bits``)
PT2E_VARIANTS["pt2e-a4-res8"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"], "residual_bits": 8}
#: the layer inputs' ranges searched on the graph (``act_ranges="observed"``), not the calibration's (default)
PT2E_VARIANTS["pt2e-a4-observed"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"], "act_ranges": "observed"}
PT2E_VARIANTS["pt2e-a4-res8-observed"] = {**PT2E_VARIANTS["pt2e-a4-res8"], "act_ranges": "observed"}
#: the feedback rounding's least-squares scale refit in the weight calibration (``feedback_refit``)
PT2E_VARIANTS["pt2e-a4-refit"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"], "weights": {"feedback_refit": True}}
#: the Gram matrices on 32,768 im2col rows per layer (``calibration_rows``; "auto" was 8,192, now 32,768 up to n=576)
PT2E_VARIANTS["pt2e-a4-rows32k"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"], "weights": {"calibration_rows": 32_768}}
#: the fixed target damp 0.01 (``target_damp``; the recipe's before each layer cross-validated it)
PT2E_VARIANTS["pt2e-a4-damp-0.01"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"], "weights": {"target_damp": 0.01}}
#: the weight calibration's simulation with the shortcut's read of a layer's input quantized too (act_shortcuts=True),
#: and without (default; section dev-act-shortcuts ran with True the default: its half-tol02 rows are "shortcuts")
PT2E_VARIANTS["pt2e-a4-shortcuts"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"], "weights": {"act_shortcuts": True}}
PT2E_VARIANTS["pt2e-a4-no-shortcuts"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"], "weights": {"act_shortcuts": False}}
#: the refinement's opt-in per-observer stage at W4A4 (``layer_factors``), alone and with ``act_shortcuts``
PT2E_VARIANTS["pt2e-a4-layers"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"], "layer_factors": LAYER_FACTORS}
PT2E_VARIANTS["pt2e-a4-shortcuts-layers"] = {**PT2E_VARIANTS["pt2e-a4-shortcuts"], "layer_factors": LAYER_FACTORS}
#: each residual sum's mean error (shortcut read quantized) moved into its branch layer's bias (residual_correction)
PT2E_VARIANTS["pt2e-a4-resmean"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"], "weights": {"residual_correction": True}}
PT2E_VARIANTS["pt2e-a4-shortcuts-resmean"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"],
                                              "weights": {"act_shortcuts": True, "residual_correction": True}}
#: activation channels equalised before the graph (benchmarks.equalization: inside blocks, and the residual stream)
PT2E_VARIANTS["pt2e-a4-acle"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"], "equalize_acts": ("pairs",)}
PT2E_VARIANTS["pt2e-a4-acle-stream"] = {**PT2E_VARIANTS["pt2e-a4-half-tol02"], "equalize_acts": ("pairs", "stream")}
#: ``fx-a8*``: the shared factor alone (``layer_factors=()``, the FX default before section dev-fx-layers)
FX_VARIANTS: dict[str, dict[str, Any]] = {f"fx-a8{k}": {**v, "layer_factors": ()} for k, v in REFINE.items()}
#: the refinement's second stage: each observer also tries 0.7-1.1 times the shared factor (the FX default)
FX_VARIANTS["fx-a8-layers"] = {**REFINE["-half-tol02"], "layer_factors": LAYER_FACTORS}
#: the factory defaults without the refinement, and torch's own default qconfig mapping (x86)
FX_VARIANTS["fx-a8-plain"] = {"refine": False}
FX_VARIANTS["fx-a8-torch-default"] = {"mapping": "torch", "refine": False}
HEADER = """# Development split

Generated by `python -m benchmarks.dev_split`; do not edit by hand. Recipe choices are measured here, on
training images the calibration never draws (40,000-49,999), never on the test set. KL: mean
`KL(p_float || p_quant)` over the 10,000 dev images (lower is closer to the float network); agree: top-1
agreement with the float network; "KL / first": KL relative to the first variant of the row group.
"""


def load(name: str) -> nn.Module:
    """A shared zoo model, or a held-out network: ``vgg`` (:mod:`benchmarks.heldout_vgg`), ``mbconv``
    (:mod:`benchmarks.heldout_mbconv`; both trained on the first 45,000 training images)."""
    if name in ("vgg", "mbconv"):
        from benchmarks.heldout_mbconv import NET
        from benchmarks.heldout_vgg import VGG

        net = VGG if name == "vgg" else NET
        model = net.build()
        model.load_state_dict(torch.load(net.weights, weights_only=True))
        return model.eval()
    from requant_plugin.zoo import load_model

    return load_model(name).eval()


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """The model's outputs on ``x`` in batches."""
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def score(ref: torch.Tensor, out: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """KL(p_ref || p_out) mean, top-1 agreement with ``ref`` and top-1 against ``labels`` (percent)."""
    lp, lq = torch.log_softmax(ref.double(), 1), torch.log_softmax(out.double(), 1)
    kl = float((lp.exp() * (lp - lq)).sum(1).mean())
    agree = float((ref.argmax(1) == out.argmax(1)).double().mean()) * 100
    top1 = float((out.argmax(1) == labels).double().mean()) * 100
    return {"kl": kl, "agree": agree, "top1": top1}


def calibration(x_train: torch.Tensor, seed: int, images: int = IMAGES) -> list[torch.Tensor]:
    """``images`` images drawn with ``seed`` from the first :data:`CAL_POOL`, in batches of :data:`BATCH` (two
    batches when that leaves fewer than two)."""
    idx = torch.randperm(CAL_POOL, generator=torch.Generator().manual_seed(seed))[:images]
    batch = BATCH if images >= 2 * BATCH else max(1, images // 2)
    return [x_train[idx[i:i + batch]] for i in range(0, images, batch)]


def cache_key(model: str, bits: int, seed: int, variant: str, digest: str, images: int = IMAGES) -> dict[str, Any]:
    """The cache key of one run (``images`` only when it is not the default, so older entries stay valid)."""
    key: dict[str, Any] = dict(model=model, bits=bits, seed=seed, variant=variant, code=digest)
    return key if images == IMAGES else {**key, "images": images}


def run_one(model: nn.Module, x_train: torch.Tensor, bits: int, seed: int, variant: str,
            dev: tuple[torch.Tensor, torch.Tensor, torch.Tensor], images: int = IMAGES) -> dict[str, float]:
    """Quantize a copy of ``model`` with the variant on ``images`` calibration images and score it on the dev
    images."""
    from requant_plugin.ptq import quantize_weights

    cal = calibration(x_train, seed, images)
    options = dict({**VARIANTS, **PT2E_VARIANTS, **FX_VARIANTS}[variant])
    if options.pop("hflip", False):
        cal = cal + [b.flip(-1) for b in cal]
    t0 = time.perf_counter()
    if "equalize" in options or "equalize_acts" in options:
        from benchmarks.equalization import equalize, equalize_activations

        model = (equalize(model, options.pop("equalize")) if "equalize" in options
                 else equalize_activations(model, cal, options.pop("equalize_acts")))
    if variant in PT2E_VARIANTS:
        q = _pt2e(model, bits, cal, **options)
    elif variant in FX_VARIANTS:
        q = _fx(model, cal, **options)
    else:
        q, _ = quantize_weights(model, "beyond", bits=bits, calibration_data=cal, **options)
    secs = time.perf_counter() - t0
    x_dev, y_dev, ref = dev
    q.eval()  # an exported graph's patched eval() returns None
    return {**score(ref, logits(q, x_dev), y_dev), "seconds": secs}


def _pt2e(model: nn.Module, bits: int, cal: list[torch.Tensor], act_bits: int, pooled_input: str | None = None,
          residual_bits: int | None = None, act_ranges: str = "report", weights: dict[str, Any] | None = None,
          **refine: Any) -> nn.Module:
    """The integer-graph path of :data:`PT2E_VARIANTS` (the converted q/dq graph); ``weights``: more
    ``quantize_weights`` options."""
    from requant_plugin.observers.flows import quantize_pt2e
    from requant_plugin.pt2e import get_requant_quantizer
    from requant_plugin.ptq import quantize_weights
    from requant_plugin.refine import RefineConfig

    qw, report = quantize_weights(model, bits, recipe="beyond-tensorrt", calibration_data=cal, fold_bn=True,
                                  act_bits=act_bits, **(weights or {}))
    quantizer = get_requant_quantizer(bits, act_bits, weight_ranges=report, pooled_input=pooled_input,
                                      residual_bits=residual_bits, act_ranges=act_ranges)
    return quantize_pt2e(qw, quantizer, cal, refine=RefineConfig(**refine))[0]


def _fx(model: nn.Module, cal: list[torch.Tensor], mapping: str = "requant", refine: bool = True,
        **options: Any) -> nn.Module:
    """The W8A8 ``convert_fx`` (x86) path of :data:`FX_VARIANTS`: REQuant's factory mapping (``mapping="torch"``:
    torch's default), refined with ``RefineConfig(**options)`` unless ``refine`` is False."""
    from requant_plugin.observers.flows import default_mapping, quantize_fx
    from requant_plugin.qconfig import get_requant_qconfig_mapping
    from requant_plugin.refine import RefineConfig

    qconfig = default_mapping("x86") if mapping == "torch" else get_requant_qconfig_mapping()
    return quantize_fx(model, qconfig, cal, refine=RefineConfig(**options) if refine else False)[0]


def table(cache: ResultCache, digest: str, models: Sequence[str], bits: Sequence[int], seeds: Sequence[int],
          variants: Sequence[str], images: int = IMAGES) -> str:
    """One row per (model, bits, variant): KL and agreement averaged over the seeds, KL per seed."""
    rows = []
    for m in models:
        for b in bits:
            base: float | None = None
            for v in variants:
                got = [cache.get(cache_key(m, b, s, v, digest, images)) for s in seeds]
                done = [r for r in got if r is not None]
                if not done:
                    continue
                kl = float(np.mean([r["kl"] for r in done]))
                base = kl if base is None else base
                rows.append([m, f"W{b}", v, len(done), f"{kl:.5f}", fmt(kl / base, 3),
                             fmt(float(np.mean([r["agree"] for r in done]))),
                             fmt(float(np.mean([r["top1"] for r in done]))),
                             " / ".join("-" if r is None else f"{r['kl']:.5f}" for r in got),
                             fmt(float(np.mean([r["seconds"] for r in done])), 1)])
    return md_table(["model", "bits", "variant", "seeds", "KL", "KL / first", "agree %", "dev top-1",
                     "KL per seed", "s"], rows)


def split(threads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Set the run up (seed 0, ``threads`` torch threads) and return the CIFAR-10 training images (the calibration
    pool is their first :data:`CAL_POOL`) and the dev images and labels (the rest)."""
    from requant_plugin.data import load_cifar10

    setup(0, threads)
    ds = load_cifar10()
    if len(ds.y_train) <= CAL_POOL:
        raise SystemExit(f"need more than {CAL_POOL} training images, found {len(ds.y_train)}")
    return ds.x_train, ds.x_train[CAL_POOL:], ds.y_train[CAL_POOL:]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dev_split", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2"])
    ap.add_argument("--bits", type=int, nargs="+", default=[2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["recipe", "no-widen"],
                    choices=sorted({**VARIANTS, **PT2E_VARIANTS, **FX_VARIANTS}))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=IMAGES, help=f"calibration images (default {IMAGES})")
    ap.add_argument("--section", default=None, help="section name in docs/dev-split.md (default: from the arguments)")
    ap.add_argument("--no-write", action="store_true", help="print the table instead of writing the page")
    args = ap.parse_args(argv)
    if not 1 <= args.images <= CAL_POOL:
        ap.error(f"--images must be within 1..{CAL_POOL}, got {args.images}")
    x_train, x_dev, y_dev = split(args.threads)
    digest, cache = code_digest(), ResultCache(CACHE)
    jobs = [(m, b, s, v) for m in args.models for b in args.bits for s in args.seeds for v in args.variants]
    models: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    for m, b, s, v in progress(jobs, "dev split"):
        key = cache_key(m, b, s, v, digest, args.images)
        if cache.get(key) is not None:
            continue
        if m not in models:
            net = load(m)
            models[m] = (net, logits(net, x_dev))
        net, ref = models[m]
        result = run_one(net, x_train, b, s, v, (x_dev, y_dev, ref), args.images)
        if not all(math.isfinite(x) for x in result.values()):
            raise SystemExit(f"non-finite result for {key}: {result}")
        cache.put(key, result)
    body = table(cache, digest, args.models, args.bits, args.seeds, args.variants, args.images)
    argv_text = command("dev_split", argv if argv is not None else sys.argv[1:])
    body += f"\n\nLibrary digest {digest}. Command: `{argv_text}`\n\nMachine: {environment()}\n"
    if args.no_write:
        print(body)
        return 0
    name = args.section or f"dev-{'-'.join(args.models)}-w{''.join(map(str, args.bits))}"
    write_section(DOC, name, body, header=HEADER)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
