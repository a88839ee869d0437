#!/usr/bin/env python
"""W8A8 through ``convert_fx``: how far each activation range choice moves the network's output.

Label-free: every quantized model is compared with the FP32 model on held-out training images
(the last shard's first ``--held-out`` images, never used for calibration), by the mean squared
logit error and the top-1 agreement. For each model and calibration seed (8 batches of 64, the
same for every configuration of that seed):

* torch's default x86 qconfig (``HistogramObserver`` + ``PerChannelMinMaxObserver``);
* ``get_requant_qconfig_mapping()`` (the factory default, subsampled activation histograms);
* the same with exact histograms (``act_sample_size=None``);
* the exact REQuant ranges scaled by fixed factors (``--factors``): every activation scale times
  ``f`` after calibration, zero points unchanged;
* the factory default followed by :func:`requant_plugin.refine.refine_activation_ranges` (one
  shared factor fitted on the calibration batches' output error; the held-out images are unseen).

The factors locate the output-error optimum relative to REQuant's per-tensor MSE optimum. Writes
section ``output-error`` of ``docs/observers-results.md`` and ``docs/img/observers_output_error.png``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.activation_observer_speed.doc import environment
from benchmarks.harness.markdown import OBSERVERS_HEADER, write_section
from benchmarks.harness.paths import DOCS, IMG
from benchmarks.harness.runtime import command
from requant_plugin import get_requant_qconfig_mapping
from requant_plugin.data import cifar10_available, load_cifar10
from requant_plugin.observers.flows import default_mapping, prepare_calibrated
from requant_plugin.observers.scripts import load_task, quiet
from requant_plugin.refine import refine_activation_ranges

DOC = DOCS / "observers-results.md"
PNG = IMG / "observers_output_error.png"
BASE = ("default", "requant", "exact")


def held_out_images(n: int) -> torch.Tensor:
    """The first ``n`` images of the last train shard (calibration draws from the first one)."""
    ds = load_cifar10(train_limit=None, test_limit=1)
    return ds.x_train[-10_000:][:n]


def scaled_ranges(prepared_model: torch.nn.Module, factor: float) -> torch.nn.Module:
    """A copy whose activation observers report ``factor`` times their scale (same zero point)."""
    out = copy.deepcopy(prepared_model)
    for name, mod in out.named_modules():
        if "activation_post_process" in name and hasattr(mod, "calculate_qparams"):
            scale, zero_point = mod.calculate_qparams()
            mod.calculate_qparams = (lambda s=scale * factor, z=zero_point: (s, z))  # type: ignore[method-assign]
    return out


def logits(model: torch.nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch]) for i in range(0, len(images), batch)])


def run(models: Sequence[str], seeds: Sequence[int], factors: Sequence[float], n_held: int) -> dict[str, Any]:
    """``{model: {config: [(logit_mse, agreement, range factor) per seed]}}``."""
    from torch.ao.quantization.quantize_fx import convert_fx

    torch.backends.quantized.engine = "x86"
    images = held_out_images(n_held)
    out: dict[str, Any] = {}
    for name in models:
        rows: dict[str, list[tuple[float, float, float]]] = {}
        for seed in seeds:
            task = load_task(name, calib_batches=8, batch_size=64, seed=seed)
            ref = logits(task.model.eval(), images)
            top = ref.argmax(1)
            mappings = (("default", default_mapping("x86")), ("requant", get_requant_qconfig_mapping()),
                        ("exact", get_requant_qconfig_mapping(act_sample_size=None)))
            preps: dict[str, Any] = {cfg: prepare_calibrated(task.model, mapping, task.calibration)[0]
                                     for cfg, mapping in mappings}
            for f in factors:
                preps[f"x{f:g}"] = scaled_ranges(preps["exact"], f)
            preps["refined"] = copy.deepcopy(preps["requant"])
            beta = {cfg: 1.0 for cfg in preps} | {f"x{f:g}": f for f in factors}
            beta["refined"] = refine_activation_ranges(preps["refined"], task.model, task.calibration).factor
            for cfg, p in preps.items():
                lg = logits(convert_fx(copy.deepcopy(p)), images)
                rows.setdefault(cfg, []).append((float(((lg - ref) ** 2).mean()),
                                                 float((lg.argmax(1) == top).double().mean()), beta[cfg]))
            print(f"[{time.strftime('%H:%M:%S')}] {name} seed {seed}: " + ", ".join(
                f"{k} {v[-1][0]:.4f}" for k, v in rows.items()), file=sys.stderr, flush=True)
        out[name] = rows
    return out


def _label(cfg: str, vals: Sequence[tuple[float, float, float]] = ()) -> str:
    if cfg == "refined":
        b = [v[2] for v in vals]
        span = f" (factor {min(b):.3f}-{max(b):.3f})" if b else ""
        return f"REQuant + `refine_activation_ranges`{span}"
    return {"default": "torch default", "requant": "REQuant (factory default)",
            "exact": "REQuant, exact histograms"}.get(cfg, f"exact REQuant ranges {cfg.replace('x', 'x ')}")


def markdown(res: dict[str, Any], seeds: Sequence[int], n_held: int, cmd: str) -> str:
    lines = [f"Command: `{cmd}`  ",
             f"W8A8 `convert_fx` (x86 int8), calibration 8 batches of 64 (seeds {', '.join(map(str, seeds))}); "
             f"error against the FP32 model on {n_held:,} held-out training images (last train shard). "
             f"{environment()}.", ""]
    for name, rows in res.items():
        ex = np.array([m for m, *_ in rows["exact"]])
        lines += [f"**{name}**: mean squared logit error (relative to exact REQuant ranges) and top-1 "
                  "agreement with FP32, mean over seeds", "",
                  "| activation ranges | " + " | ".join(f"seed {s}" for s in seeds)
                  + " | mean | vs exact REQuant | seeds below exact REQuant | top-1 agreement |",
                  "| :--- | " + " | ".join("---:" for _ in seeds) + " | ---: | ---: | ---: | ---: |"]
        for cfg, vals in rows.items():
            mse = np.array([m for m, *_ in vals])
            agree = np.mean([a for _, a, *_ in vals])
            below = int(np.sum(mse < ex)) if cfg != "exact" else 0
            lines.append(f"| {_label(cfg, vals)} | " + " | ".join(f"{m:.4f}" for m in mse)
                         + f" | {mse.mean():.4f} | {100 * (mse.mean() / ex.mean() - 1):+.1f} % | "
                         + (f"{below}/{len(mse)}" if cfg != "exact" else "") + f" | {100 * agree:.2f} % |")
        lines += ["", *_versus_default(name, rows), ""]
    lines.append(f"![logit error vs range factor]({PNG.relative_to(DOC.parent).as_posix()})")
    return "\n".join(lines)


def _versus_default(name: str, rows: dict[str, list[tuple[float, float, float]]]) -> list[str]:
    """One bullet per REQuant row: its logit error against the default's, paired by seed."""
    d = np.array([m for m, *_ in rows["default"]])
    out = []
    for cfg in ("requant", "exact", "refined"):
        if cfg not in rows:
            continue
        r = np.array([m for m, *_ in rows[cfg]]) / d
        out.append(f"- {name}: {_label(cfg)} / torch default, logit MSE ratio {r.mean():.3f} on average "
                   f"(range {r.min():.3f}-{r.max():.3f}); lower on {int(np.sum(r < 1))} of {len(r)} seeds")
    return out


def plot(res: dict[str, Any], factors: Sequence[float], path: Path = PNG) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(res), figsize=(5.5 * len(res), 4), squeeze=False)
    xs = sorted([1.0, *factors])
    for ax, (name, rows) in zip(axes[0], res.items(), strict=True):
        ex = np.array([m for m, *_ in rows["exact"]])
        for i in range(len(ex)):
            ys = [(rows["exact"] if f == 1.0 else rows[f"x{f:g}"])[i][0] / ex[i] for f in xs]
            ax.plot(xs, ys, "o-", color="tab:blue", alpha=0.5,
                    label="exact REQuant ranges x factor" if i == 0 else None)
            ax.plot([1.0], [rows["default"][i][0] / ex[i]], "s", color="tab:red",
                    label="torch default" if i == 0 else None)
            ax.plot([1.0], [rows["requant"][i][0] / ex[i]], "^", color="tab:green",
                    label="REQuant (subsampled)" if i == 0 else None)
            if "refined" in rows:
                ax.plot([rows["refined"][i][2]], [rows["refined"][i][0] / ex[i]], "D", color="tab:purple",
                        label="REQuant + refine_activation_ranges (at its factor)" if i == 0 else None)
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set(title=f"{name}, W8A8 convert_fx", xlabel="activation range factor (1 = REQuant's MSE optimum)",
               ylabel="logit MSE / exact REQuant")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--factors", nargs="+", type=float, default=[0.9, 0.95, 1.05, 1.1])
    ap.add_argument("--held-out", type=int, default=5000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if 1.0 in args.factors or any(f <= 0 for f in args.factors):
        ap.error("--factors: positive values other than 1 (1 is the exact REQuant row)")
    if not cifar10_available():
        print("the shared CIFAR-10 data is needed (set REQUANT_SHARED_DIR); nothing to measure", file=sys.stderr)
        return 2
    quiet()
    res = run(args.models, args.seeds, args.factors, args.held_out)
    given = list(sys.argv[1:] if argv is None else argv)
    cmd = command("activation_output_error", given)
    text = markdown(res, args.seeds, args.held_out, cmd)
    print(text)
    if not args.no_write:
        plot(res, args.factors)
        write_section(DOC, "output-error", text, header=OBSERVERS_HEADER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
