"""Train the CIFAR MobileNetV2 (width 0.5) of the zoo on the shared CIFAR-10 arrays, seeded.

``python -m benchmarks.train_mobilenetv2 --epochs 30 --out cifar10_mobilenetv2_x0_5.pt``

Recipe: SGD (momentum 0.9, Nesterov), weight decay 4e-5 on weights only, label smoothing 0.1,
one-cycle learning rate (peak ``--lr``), batch 128, random 4-pixel-padded crops and horizontal
flips, channels_last. The last ``--holdout`` training images (after the shards' own shuffle) are
held out as the validation set the run reports each epoch; the test set is evaluated once, at the
end, and only reported. The state_dict is written with ``torch.save`` (plain tensors, loadable with
``weights_only=True``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness.runtime import environment, progress, setup
from requant_plugin.data import load_cifar10
from requant_plugin.zoo.mobilenet_cifar import mobilenetv2_x0_5


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded 32x32 crops (zero padding, in normalised units) and horizontal flips."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=gen).tolist()
    dx = torch.randint(0, 9, (n,), generator=gen).tolist()
    out = torch.stack([padded[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(zip(dy, dx, strict=True))])
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(y), batch):
            xb = x[i:i + batch].contiguous(memory_format=torch.channels_last)
            correct += int((model(xb).argmax(1) == y[i:i + batch]).sum())
    return 100.0 * correct / max(1, len(y))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_mobilenetv2", description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--holdout", type=int, default=5000, help="training images kept for validation")
    ap.add_argument("--train-limit", type=int, default=None, help="train on fewer images (smoke runs)")
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="state_dict file to write")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    setup(args.seed, args.threads)
    ds = load_cifar10(train_limit=args.train_limit, test_limit=args.test_limit, seed=args.seed)
    n_val = min(args.holdout, len(ds.y_train) // 5)
    x_tr, y_tr = ds.x_train[:-n_val], ds.y_train[:-n_val]
    x_val, y_val = ds.x_train[-n_val:], ds.y_train[-n_val:]
    model = mobilenetv2_x0_5().to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub omits memory_format
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 4e-5}, {"params": rest, "weight_decay": 0.0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    steps = -(-len(y_tr) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, epochs=args.epochs, steps_per_epoch=steps)
    gen = torch.Generator().manual_seed(args.seed)
    log = []
    for epoch in range(args.epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(y_tr), generator=gen)
        for i in progress(range(steps), f"epoch {epoch + 1}/{args.epochs}"):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            xb = augment(x_tr[idx], gen).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(xb), y_tr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        val = evaluate(model, x_val, y_val)
        log.append({"epoch": epoch + 1, "val_top1": val, "seconds": time.perf_counter() - t0})
        print(f"epoch {epoch + 1}: held-out top-1 {val:.2f} % ({log[-1]['seconds']:.0f} s)", flush=True)
    model = model.to(memory_format=torch.contiguous_format).eval()
    test = evaluate(model, ds.x_test, ds.y_test)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
    summary = {"test_top1": test, "epochs": log, "args": {k: str(v) for k, v in vars(args).items()},
               "environment": environment()}
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"test top-1 {test:.2f} % -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
