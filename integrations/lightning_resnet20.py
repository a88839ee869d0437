#!/usr/bin/env python
"""FP32 vs W8A8 vs W4 (weights-only) test accuracy of a LightningModule through REQuantCalibration.

With the shared CIFAR-10 arrays and ResNet-20 weights present, the pretrained ResNet-20 is
wrapped in a LightningModule and each configuration is one ``trainer.test`` run: the callback
calibrates at test start (on ``--calib-batches`` batches of the train split), swaps the
quantized copy in for the test loop, puts the float network back afterwards and logs the
FP32 and quantized accuracy of the same test batches side by side. Without the shared data it
falls back to the digits SmallCNN, trained here with ``trainer.fit`` (the callback then
calibrates in ``on_fit_end``).

Configurations (all REQuant ranges):

* ``W8A8 pt2e``: torchao pt2e, 8-bit per-channel weights, 8-bit activations (``requant_plugin.pt2e``).
* ``W8A8 FX``: torch.ao FX on the x86 backend (``requant_plugin.qconfig``; activations use x86's
  ``0..127`` reduce-range default, i.e. 7 bits).
* ``W4 weights-only``: ``quantize_weights`` with 4-bit per-channel weights in REQuant's sqrt space.

Examples::

    python integrations/lightning_resnet20.py                       # full CIFAR-10 test set
    python integrations/lightning_resnet20.py --test-limit 1000 --flavour pytorch_lightning
    python integrations/lightning_resnet20.py --test-limit 10000 --update-doc docs/lightning.md
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CONFIGS: dict[str, dict[str, Any]] = {
    "W8A8 pt2e": {"mode": "pt2e", "weight_bits": 8, "act_bits": 8},
    "W8A8 FX": {"mode": "fx", "weight_bits": 8, "act_bits": 8},
    "W4 weights-only": {"mode": "weights", "weight_bits": 4, "space": "sqrt", "per_channel": True},
}
DOC_START, DOC_END = "<!-- lightning-resnet20:start -->", "<!-- lightning-resnet20:end -->"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flavour", choices=("lightning", "pytorch_lightning"), default="lightning")
    p.add_argument("--data", choices=("auto", "cifar10", "digits"), default="auto",
                   help="auto: CIFAR-10 + ResNet-20 when the shared files exist, else digits")
    p.add_argument("--test-limit", type=int, default=10000, help="test images (class-stratified)")
    p.add_argument("--calib-batches", type=int, default=8, help="calibration batches per config")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), metavar="NAME",
                   help=f"subset of {list(CONFIGS)}")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--update-doc", help="replace the results block of this markdown file")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p


def make_module_classes(pl: Any) -> tuple[type, type]:
    """A classifier LightningModule (``self.model``) and an ArrayDataset DataModule for ``pl``."""

    class Classifier(pl.LightningModule):
        def __init__(self, model: nn.Module, lr: float = 1e-2) -> None:
            super().__init__()
            self.model = model
            self.lr = lr

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self(x), y)

        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            acc = (self(x).argmax(1) == y).float().mean()
            self.log("test_acc", acc, batch_size=len(y))

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    class ArrayData(pl.LightningDataModule):
        def __init__(self, data: Any, batch_size: int, test_limit: int, seed: int) -> None:
            super().__init__()
            self.data, self.batch_size, self.test_limit, self.seed = data, batch_size, test_limit, seed

        def train_dataloader(self) -> Any:
            return self.data.loader("train", self.batch_size, shuffle=True, seed=self.seed)

        def test_dataloader(self) -> Any:
            return self.data.loader("test", self.batch_size, limit=self.test_limit, seed=self.seed)

    return Classifier, ArrayData


def _trainer_kwargs(**extra: Any) -> dict[str, Any]:
    kw: dict[str, Any] = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                              enable_model_summary=False, enable_progress_bar=False,
                              num_sanity_val_steps=0)
    kw.update(extra)
    return kw


def load_setup(args: argparse.Namespace) -> tuple[str, nn.Module | None, Any]:
    """``(description, pretrained model or None (train on digits), data set)``."""
    from requant_plugin.data import cifar10_available, load_cifar10, load_digits
    from requant_plugin.zoo import default_weights_path

    weights = default_weights_path("resnet20")
    use_cifar = args.data == "cifar10" or (
        args.data == "auto" and cifar10_available() and weights is not None and weights.is_file())
    if use_cifar:
        from requant_plugin.zoo import load_model

        train_limit = args.calib_batches * args.batch_size
        data = load_cifar10(train_limit=train_limit, test_limit=args.test_limit, seed=args.seed)
        return "ResNet-20 (shared pretrained weights), CIFAR-10 (JPEG) test set", load_model("resnet20"), data
    return "SmallCNN trained with trainer.fit, scikit-learn digits", None, load_digits(seed=args.seed)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every configuration; returns ``{"setup", "fp32", "rows": [...], ...}``."""
    pl = importlib.import_module("lightning.pytorch" if args.flavour == "lightning" else "pytorch_lightning")
    plugin = importlib.import_module(f"requant_plugin.{args.flavour}")
    Classifier, ArrayData = make_module_classes(pl)
    setup, pretrained, data = load_setup(args)
    dm = ArrayData(data, args.batch_size, args.test_limit, args.seed)
    n_test = min(args.test_limit, len(data.y_test))
    if pretrained is None:  # digits: train here; the first callback calibrates in on_fit_end
        from requant_plugin.zoo import SmallCNN

        torch.manual_seed(args.seed)
        c, h, _ = data.input_shape
        module = Classifier(SmallCNN(c, data.num_classes, h))
    else:
        module = Classifier(pretrained)
    rows, fp32 = [], None
    for i, name in enumerate(args.configs):
        cb = plugin.REQuantCalibration("model", num_batches=args.calib_batches, verbose=False,
                                       progress=False, **CONFIGS[name])
        trainer = pl.Trainer(**_trainer_kwargs(callbacks=[cb], max_epochs=6))
        t0 = time.perf_counter()
        if pretrained is None and i == 0:
            trainer.fit(module, dm)
        res = trainer.test(module, dm, verbose=False)[0]
        seconds = time.perf_counter() - t0
        assert not isinstance(module.model, plugin.QuantizedModule)  # float network back in place
        if fp32 is None:
            fp32 = 100 * res["requant/fp32_acc"]
        rows.append({"config": name, "mode": CONFIGS[name]["mode"], "test_acc": 100 * res["test_acc"],
                     "fp32_acc": 100 * res["requant/fp32_acc"],
                     "agreement": 100 * res["requant/top1_agreement"], "sqnr_db": res["requant/sqnr_db"],
                     "seconds": seconds, "layers": len(cb.summary)})
        print(f"{name:18s} test_acc {rows[-1]['test_acc']:6.2f}%  (FP32 {rows[-1]['fp32_acc']:.2f}%, "
              f"top-1 agreement {rows[-1]['agreement']:.2f}%, SQNR {rows[-1]['sqnr_db']:.1f} dB, "
              f"{seconds:.1f} s)", flush=True)
    return {"setup": setup, "flavour": args.flavour, "test_images": n_test,
            "calib_images": args.calib_batches * args.batch_size, "fp32": fp32, "rows": rows}


def markdown(result: dict[str, Any], command: str) -> str:
    """The results as a markdown table, with the command that produced it."""
    lines = [
        f"{result['setup']}; {result['test_images']:,} test images, "
        f"{result['calib_images']:,} calibration images, `{result['flavour']}` flavour, CPU.",
        "",
        "| configuration | mode | test accuracy | FP32 (same batches) | top-1 agreement | output SQNR |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        f"| FP32 | - | {result['fp32']:.2f}% | - | - | - |",
    ]
    lines += [f"| {r['config']} | `{r['mode']}` | {r['test_acc']:.2f}% | {r['fp32_acc']:.2f}% | "
              f"{r['agreement']:.2f}% | {r['sqnr_db']:.1f} dB |" for r in result["rows"]]
    lines += ["", f"Produced by `{command}`."]
    return "\n".join(lines)


def update_doc(path: str, block: str) -> None:
    """Replace the text between the results markers of ``path``."""
    doc = Path(path)
    text = doc.read_text()
    if DOC_START not in text or DOC_END not in text:
        raise ValueError(f"{path} has no {DOC_START} ... {DOC_END} block")
    head, rest = text.split(DOC_START, 1)
    _, tail = rest.split(DOC_END, 1)
    doc.write_text(f"{head}{DOC_START}\n{block}\n{DOC_END}{tail}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    result = run(args)
    command = "python integrations/lightning_resnet20.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    block = markdown(result, command.strip())
    print(block)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.update_doc:
        update_doc(args.update_doc, block)
    return result


if __name__ == "__main__":
    main()
