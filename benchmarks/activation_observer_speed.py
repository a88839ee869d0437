#!/usr/bin/env python
"""Activation calibration: REQuantObserver vs torch's HistogramObserver, speed and output-range MSE.

Every activation quantization point of the shared ResNet-20 (``prepare_fx`` with the x86
mapping) gets a *tap* observer that feeds the same tensor to a ``HistogramObserver`` and a
``REQuantObserver`` on the same range (x86's 7-bit ``0..127`` and 4-bit ``0..15``), timing each
call; the two run in alternating order on every batch so that both see the same machine load.
Reported per range:

* calibration time per batch (wall and CPU seconds summed over the quantization points) and
  the speed-up, plus the one-off ``calculate_qparams`` time;
* output-range MSE: the mean squared error of each observer's (scale, zero point) on the
  calibration activations and on held-out test activations, summed over the points, the
  median per-point ratio and the number of points where REQuant is at least as good.

``--repeat N`` (default 5) times the calibration N times and reports the run with the median
speed-up next to the speed-ups of all runs (this shared machine's timings vary by about 10 %).
``--quick``: 4 calibration batches of 32 and 128 held-out images, one run; ``--threads 1`` repeats the
measurement with single-threaded torch (its own section); ``--sample-size all`` bins every value
(the reference for the subsample's MSE; printed, not written). The markdown table goes to
``docs/observers-results.md`` (section ``activation-speed``; ``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "integrations"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from torch.ao.quantization import QConfig, QConfigMapping  # noqa: E402
from torch.ao.quantization.observer import (  # noqa: E402
    HistogramObserver,
    PerChannelMinMaxObserver,
    UniformQuantizationObserverBase,
)

from requant_plugin._activation_observer import DEFAULT_SAMPLE_SIZE  # noqa: E402
from requant_plugin.observers import REQuantObserver  # noqa: E402

DOC = ROOT / "docs" / "observers-results.md"
RANGES = ((0, 127), (0, 15))
NAMES = ("histogram", "requant")


class Tap(UniformQuantizationObserverBase):
    """Feeds every tensor to a HistogramObserver and a REQuantObserver per range, timing them.

    ``mode="calibrate"``: observe (timed); ``mode="evaluate"``: accumulate each observer's
    fake-quantization squared error on the tensor (after ``freeze()`` computed the qparams).
    """

    #: ``REQuantObserver(sample_size=...)`` of every tap (``--sample-size``; None bins every value)
    sample_size: int | None = DEFAULT_SAMPLE_SIZE
    #: also feed an exactly binning REQuantObserver per range, untimed (``--vs-exact``)
    reference = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(dtype=torch.quint8, quant_min=0, quant_max=127)
        self.obs = torch.nn.ModuleDict()
        for lo, hi in RANGES:
            self.obs[f"histogram_{hi}"] = HistogramObserver(quant_min=lo, quant_max=hi)
            self.obs[f"requant_{hi}"] = REQuantObserver(quant_min=lo, quant_max=hi, sample_size=self.sample_size)
        self.ref = torch.nn.ModuleDict({f"exact_{hi}": REQuantObserver(quant_min=lo, quant_max=hi, sample_size=None)
                                        for lo, hi in RANGES} if self.reference else {})
        self.wall_s = dict.fromkeys(self.obs, 0.0)
        self.cpu_s = dict.fromkeys(self.obs, 0.0)
        self.qp_wall: dict[str, float] = {}
        self.qparams: dict[str, tuple[float, int]] = {}
        self.sse = {"calib": dict.fromkeys(self.obs, 0.0), "test": dict.fromkeys(self.obs, 0.0)}
        self.count = {"calib": 0, "test": 0}
        self.mode = "calibrate"
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "calibrate":
            order = list(self.obs) if self.calls % 2 == 0 else list(self.obs)[::-1]
            for key in order:
                w0, c0 = time.perf_counter(), time.process_time()
                observer: Any = self.obs[key]
                observer(x)
                self.wall_s[key] += time.perf_counter() - w0
                self.cpu_s[key] += time.process_time() - c0
            for ref in self.ref.values():  # untimed
                ref(x)
            self.calls += 1
            return x
        split = self.mode
        xd = x.detach().double()
        for key, (scale, zp) in self.qparams.items():
            if key not in self.obs:
                continue
            lo, hi = RANGES[0] if key.endswith("127") else RANGES[1]
            xq = torch.fake_quantize_per_tensor_affine(x.detach().float(), scale, zp, lo, hi)
            self.sse[split][key] += float(((xq.double() - xd) ** 2).sum())
        self.count[split] += x.numel()
        return x

    def freeze(self) -> None:
        for key, ref in self.ref.items():
            scale, zp = ref.calculate_qparams()  # type: ignore[operator]
            self.qparams[key] = (float(scale), int(zp))
        for key, obs in self.obs.items():
            w0 = time.perf_counter()
            scale, zp = obs.calculate_qparams()  # type: ignore[operator]
            self.qp_wall[key] = time.perf_counter() - w0
            self.qparams[key] = (float(scale), int(zp))

    def calculate_qparams(self, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        observer: Any = self.obs["requant_127"]
        return observer.calculate_qparams()


def collect(model: torch.nn.Module, calib: list[torch.Tensor], test: list[torch.Tensor]) -> list[Tap]:
    from torch.ao.quantization.quantize_fx import prepare_fx

    mapping = QConfigMapping().set_global(QConfig(
        activation=Tap, weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                                  qscheme=torch.per_channel_symmetric)))
    prepared = prepare_fx(model.eval(), mapping, (calib[0],))
    taps = [m for m in prepared.modules() if isinstance(m, Tap)]
    with torch.no_grad():
        for x in progress(calib, "calibrate"):
            prepared(x)
        for t in taps:
            t.freeze()
        for split, data in (("calib", calib), ("test", test)):
            for t in taps:
                t.mode = split
            for x in progress(data, f"mse {split}"):
                prepared(x)
    return taps


def progress(it: Sequence[Any], desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, file=sys.stderr, leave=False)


def summarise(taps: list[Tap], n_batches: int) -> dict[str, Any]:
    out: dict[str, Any] = {"points": len(taps), "batches": n_batches}
    for _, hi in RANGES:
        h, r = f"histogram_{hi}", f"requant_{hi}"
        row: dict[str, Any] = {}
        for name, key in (("histogram", h), ("requant", r)):
            row[f"{name}_wall_ms"] = 1000 * sum(t.wall_s[key] for t in taps) / n_batches
            row[f"{name}_cpu_ms"] = 1000 * sum(t.cpu_s[key] for t in taps) / n_batches
            row[f"{name}_qparams_ms"] = 1000 * sum(t.qp_wall[key] for t in taps)
        row["speedup_wall"] = row["histogram_wall_ms"] / row["requant_wall_ms"]
        row["speedup_cpu"] = row["histogram_cpu_ms"] / row["requant_cpu_ms"]
        for split in ("calib", "test"):
            hs = np.array([t.sse[split][h] / t.count[split] for t in taps])
            rs = np.array([t.sse[split][r] / t.count[split] for t in taps])
            row[f"{split}_mse_histogram"] = float(hs.sum())
            row[f"{split}_mse_requant"] = float(rs.sum())
            row[f"{split}_median_ratio"] = float(np.median(rs / np.maximum(hs, 1e-30)))
            row[f"{split}_requant_not_worse"] = int(np.sum(rs <= hs * (1 + 1e-9)))
        if taps[0].reference:  # scale of each observer relative to the exactly binned REQuant's
            for name, key in (("histogram", h), ("requant", r)):
                dev = np.array([abs(t.qparams[key][0] / t.qparams[f"exact_{hi}"][0] - 1.0) for t in taps])
                row[f"{name}_vs_exact"] = {"mean": float(dev.mean()), "max": float(dev.max()),
                                           "over_1pct": int(np.sum(dev > 0.01))}
        out[f"0..{hi}"] = row
    return out


def exact_markdown(res: dict[str, Any], cmd: str) -> str:
    """How far each observer's scale lies from an exactly binned REQuantObserver's (every value)."""
    lines = [f"Command: `{cmd}`  ",
             f"Model: {res['model']} on {res['dataset']}, {res['points']} activation quantization points, "
             f"{res['batches']} calibration batches of {res['batch_size']}. Reference: "
             "`REQuantObserver(sample_size=None)` on the same tensors.", "",
             "| range | observer | mean abs(scale / exact - 1) | max | points off by more than 1 % |",
             "| :--- | :--- | ---: | ---: | ---: |"]
    for _, hi in RANGES:
        for name, label in (("requant", f"REQuantObserver (sample_size={Tap.sample_size})"),
                            ("histogram", "HistogramObserver")):
            d = res[f"0..{hi}"][f"{name}_vs_exact"]
            lines.append(f"| 0..{hi} | {label} | {100 * d['mean']:.2f} % | {100 * d['max']:.2f} % "
                         f"| {d['over_1pct']}/{res['points']} |")
    return "\n".join(lines)


def markdown(res: dict[str, Any], cmd: str) -> str:
    lines = [
        f"Command: `{cmd}`  ",
        f"Model: {res['model']} on {res['dataset']}, {res['points']} activation quantization points "
        f"(prepare_fx, x86 mapping), {res['batches']} calibration batches of {res['batch_size']}, "
        f"{res['test_images']} held-out test images, {res['repeats']} timing runs (the median run is shown, "
        f"the speed-ups of all runs beside it). {res['env']}.",
        "",
        "| range | HistogramObserver ms/batch (wall / CPU) | REQuantObserver ms/batch (wall / CPU) "
        "| speed-up (wall / CPU) | wall speed-up, all runs | calculate_qparams total ms (Hist / REQuant) |",
        "| :--- | ---: | ---: | ---: | :--- | ---: |",
    ]
    for _, hi in RANGES:
        r = res[f"0..{hi}"]
        spread = ", ".join(f"{x:.1f}" for x in r.get("speedup_wall_runs", [r["speedup_wall"]]))
        lines.append(
            f"| 0..{hi} | {r['histogram_wall_ms']:.1f} / {r['histogram_cpu_ms']:.1f} "
            f"| {r['requant_wall_ms']:.1f} / {r['requant_cpu_ms']:.1f} "
            f"| **{r['speedup_wall']:.1f}x** / {r['speedup_cpu']:.1f}x | {spread} "
            f"| {r['histogram_qparams_ms']:.0f} / {r['requant_qparams_ms']:.0f} |")
    lines += [
        "",
        "| range | data | sum of per-point MSE, Histogram | sum of per-point MSE, REQuant | ratio "
        "| median per-point ratio | points where REQuant <= Histogram |",
        "| :--- | :--- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for _, hi in RANGES:
        r = res[f"0..{hi}"]
        for split, label in (("calib", "calibration"), ("test", "held-out")):
            hs, rs = r[f"{split}_mse_histogram"], r[f"{split}_mse_requant"]
            lines.append(f"| 0..{hi} | {label} | {hs:.4g} | {rs:.4g} | {rs / hs:.3f} "
                         f"| {r[f'{split}_median_ratio']:.3f} | {r[f'{split}_requant_not_worse']}/{res['points']} |")
    return "\n".join(lines)


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` (append if absent)."""
    text = path.read_text() if path.is_file() else "# Observer results\n"
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    if begin not in text:
        text = text.rstrip() + f"\n\n{begin}\n{end}\n"
    i, j = text.index(begin) + len(begin), text.index(end)
    path.write_text(text[:i] + "\n" + body.strip() + "\n" + text[j:])


def environment() -> str:
    import torchao  # noqa: F401  (version only)

    return (f"Python {platform.python_version()}, torch {torch.__version__}, NumPy {np.__version__}, "
            f"{os.cpu_count()} CPU cores shared with other jobs, torch threads {torch.get_num_threads()}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="4 batches of 32, 128 held-out images")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--test-images", type=int, default=512)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (HistogramObserver uses them)")
    p.add_argument("--repeat", type=int, default=5, help="timing runs; the median run is reported with the spread")
    p.add_argument("--sample-size", default=str(DEFAULT_SAMPLE_SIZE),
                   help="REQuantObserver(sample_size=...): values binned per batch, or 'all' (no subsample); "
                        "other values are not written to the docs")
    p.add_argument("--vs-exact", action="store_true",
                   help="one untimed-reference run: each observer's scale against an exactly binned REQuantObserver "
                        "(section activation-range-noise; the speed sections are not written)")
    args = p.parse_args(argv)
    Tap.sample_size = None if args.sample_size == "all" else int(args.sample_size)
    if Tap.sample_size != DEFAULT_SAMPLE_SIZE:
        args.no_write = True
    Tap.reference = args.vs_exact
    if args.vs_exact:
        args.repeat = 1
    if args.quick:
        args.calib_batches, args.batch_size, args.test_images, args.repeat = 4, 32, 128, 1
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    from fx_qconfig import load_task, quiet

    quiet()
    task = load_task(args.model, test_limit=args.test_images, calib_batches=args.calib_batches,
                     batch_size=args.batch_size, seed=args.seed, eval_batch_size=128)
    test = [b[0] for b in task.test]
    runs = []
    for _ in progress(range(args.repeat), "repeats"):
        taps = collect(task.model, task.calibration, test)
        runs.append(summarise(taps, len(task.calibration)))
    # the run with the median 0..127 wall speed-up is reported; the spread of all runs beside it
    order = sorted(range(len(runs)), key=lambda i: runs[i]["0..127"]["speedup_wall"])
    res = runs[order[len(order) // 2]]
    for _, hi in RANGES:
        res[f"0..{hi}"]["speedup_wall_runs"] = sorted(r[f"0..{hi}"]["speedup_wall"] for r in runs)
        res[f"0..{hi}"]["speedup_cpu_runs"] = sorted(r[f"0..{hi}"]["speedup_cpu"] for r in runs)
    res.update(model=task.name, dataset=task.dataset, batch_size=args.batch_size, repeats=args.repeat,
               test_images=sum(len(x) for x in test), env=environment())
    argv_s = " ".join(sys.argv[1:] if argv is None else argv)
    cmd = f"python benchmarks/activation_observer_speed.py {argv_s}".strip()
    if args.vs_exact:
        md = exact_markdown(res, cmd)
        print(md)
        if not args.no_write:
            write_section(DOC, "activation-range-noise", md)
        return 0
    md = markdown(res, cmd)
    print(md)
    print(json.dumps(res, indent=1, default=str), file=sys.stderr)
    if not args.no_write:
        name = "activation-speed-quick" if args.quick else "activation-speed"
        write_section(DOC, name if args.threads == 2 else f"{name}-{args.threads}-thread", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
