"""Figures and numbers for docs/algorithm.md, from a real layer of the pretrained ResNet-20.

Writes:

* ``docs/img/algorithm_loss_curve.png``: L(alpha) / L(1) of one layer at W8, W6 and W4
  (per-tensor, asymmetric), dense 2,000-point grid, with REQuant's golden-search alpha;
* ``docs/img/algorithm_local_convexity.png``: a zoom on the W4 curve around its minimum, with
  the convex quadratic of each piece (codes fixed) drawn over it: L is convex on every piece and
  the pieces meet in concave kinks, so L is locally, not globally, convex;
* ``docs/img/algorithm_transform.png``: the 16 W4 levels of the uniform grid and of the
  sign(w)*sqrt|w| grid over the layer's weight histogram;

and prints a markdown table (golden search vs dense grid, per bit width, for several layers).

Usage: ``python -m benchmarks.plot_algorithm [--quick] [--layer layer2.0.conv2] [--out docs/img]``
(needs the shared ``cifar10_resnet20.pt``; set ``$REQUANT_SHARED_DIR`` or ``$REQUANT_MODELS_DIR``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

import numpy as np
import torch

from benchmarks.harness.paths import IMG
from benchmarks.harness.runtime import command
from requant_plugin import estimate_range
from requant_plugin.core import Grid, golden_search, grid_search, objective_for_rows
from requant_plugin.plots import new_figure, save_figure
from requant_plugin.ptq import quantizable_layers
from requant_plugin.zoo import load_model


def layer_weights(name: str) -> dict[str, np.ndarray]:
    """Weights of every Conv/Linear layer of the pretrained ResNet-20 (float64 rows)."""
    try:
        model = load_model("resnet20")
    except FileNotFoundError as exc:
        sys.exit(f"plot_algorithm.py: {exc}")
    out = {n: cast(torch.Tensor, m.weight).detach().double().numpy() for n, m in quantizable_layers(model)}
    if name not in out:
        sys.exit(f"plot_algorithm.py: no layer {name!r}; layers: {', '.join(out)}")
    return out


def curve(w: np.ndarray, bits: int, points: int, p: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    obj = objective_for_rows(w.reshape(1, -1), Grid.from_bits(bits), p=p)
    alphas = np.arange(1, points + 1, dtype=np.float64) / points
    return alphas, obj(alphas[None, :])[0]


def plot_loss_curves(w: np.ndarray, layer: str, points: int, out: Path) -> Path:
    fig = new_figure(6.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for bits, color in ((8, "#2ca02c"), (6, "#ff7f0e"), (4, "#1f77b4")):
        alphas, loss = curve(w, bits, points)
        l1 = loss[-1]
        est = estimate_range(torch.from_numpy(w), bits)
        a = float(est.alpha)
        ax.plot(alphas, loss / l1, color=color, lw=1.1, label=f"W{bits}")
        ax.plot([a], [float(est.mse) / l1], "o", color=color, ms=6,
                label=f"W{bits} REQuant alpha = {a:.3f}")
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_ylim(top=30)
    ax.set_xlabel("alpha (clipping range = alpha x [min w, max w])")
    ax.set_ylabel("L(alpha) / L(1)   (1 = min-max)")
    ax.set_title(f"ResNet-20 {layer}: weight MSE vs alpha (per-tensor, asymmetric)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, out / "algorithm_loss_curve.png")


def plot_local_convexity(w: np.ndarray, layer: str, out: Path, bits: int = 4, channel: int = 0) -> Path:
    """One output channel at W4: each piece's quadratic (codes frozen) touches L only on its piece.

    A channel (a few hundred weights) has few enough pieces to see them; the same structure holds
    for a whole tensor with thousands of much shorter pieces.
    """
    grid = Grid.from_bits(bits)
    x = w[channel].reshape(-1)
    obj = objective_for_rows(x[None, :], grid)
    s1, z = float(obj.s1[0]), float(obj.z[0])
    full = np.linspace(0.2, 1.0, 4000)
    full_loss = obj(full[None, :])[0]
    a_star = float(full[np.argmin(full_loss)])
    lo, hi = max(a_star - 0.06, 0.2), min(a_star + 0.06, 1.0)
    alphas = np.linspace(lo, hi, 4000)
    loss = obj(alphas[None, :])[0]
    fig = new_figure(9.0, 3.6)
    ax0 = fig.add_subplot(1, 2, 1)
    ax0.plot(full, full_loss, color="black", lw=1.0)
    ax0.axvspan(lo, hi, color="#1f77b4", alpha=0.12, label="zoomed on the right")
    ax0.set_xlabel("alpha")
    ax0.set_ylabel("weight MSE")
    ax0.set_title(f"{layer} channel {channel} ({x.size} weights), W{bits}", fontsize=9)
    ax0.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    codes = np.clip(np.rint(x[None, :] / (alphas[:, None] * s1)) + z, grid.quant_min, grid.quant_max)
    change = np.flatnonzero(np.any(codes[1:] != codes[:-1], axis=1)) + 1
    starts = np.concatenate([[0], change])
    for k, i0 in enumerate(starts):
        a_k = codes[i0] - z  # the codes, frozen on this piece
        # L_k(alpha) = mean((x - alpha * s1 * a_k)^2): a quadratic with curvature 2 s1^2 mean(a_k^2) >= 0
        c2, c1, c0 = s1 * s1 * np.mean(a_k * a_k), -2 * s1 * np.mean(x * a_k), np.mean(x * x)
        span = np.linspace(lo, hi, 400)
        ax.plot(span, c2 * span**2 + c1 * span + c0, lw=0.6, ls="--", color=f"C{k % 10}", alpha=0.7)
    ax.plot(alphas, loss, color="black", lw=1.6, label="L(alpha) = lower envelope")
    ax.plot([], [], ls="--", color="C0", lw=0.8, label="quadratic of one piece (codes fixed)")
    ax.set_ylim(loss.min() - 0.15 * np.ptp(loss), loss.max() + 0.3 * np.ptp(loss))
    ax.set_xlim(lo, hi)
    ax.set_xlabel("alpha")
    ax.set_title(f"{len(starts)} convex pieces, joined by concave kinks", fontsize=9)
    ax.legend(fontsize=7, loc="upper center")
    return save_figure(fig, out / "algorithm_local_convexity.png")


def plot_transform(w: np.ndarray, layer: str, out: Path, bits: int = 4) -> Path:
    t = torch.from_numpy(w)
    uni = estimate_range(t, bits, space="uniform")
    sq = estimate_range(t, bits, space="sqrt")
    fig = new_figure(6.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(w.reshape(-1), bins=160, color="#cccccc", label="weights")
    top = ax.get_ylim()[1]
    for v in uni.levels().numpy():
        ax.plot([v, v], [0, 0.45 * top], color="#1f77b4", lw=1.0)
    for v in sq.levels().numpy():
        ax.plot([v, v], [0.5 * top, 0.95 * top], color="#d62728", lw=1.0)
    ax.plot([], [], color="#1f77b4", label=f"uniform grid, alpha = {float(uni.alpha):.3f}, "
                                           f"MSE {float(uni.mse):.2e}")
    ax.plot([], [], color="#d62728", label=f"sqrt grid, alpha = {float(sq.alpha):.3f}, "
                                           f"MSE {float(sq.mse):.2e}")
    ax.set_xlabel("weight value")
    ax.set_title(f"ResNet-20 {layer}: the 16 W{bits} levels, uniform vs sign(w)*sqrt|w|", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, out / "algorithm_transform.png")


def table(weights: dict[str, np.ndarray], layers: list[str], points: int) -> str:
    head = ("| layer | bits | golden alpha | golden MSE | evaluations | grid alpha | grid MSE | "
            "golden / grid MSE | min-max MSE |")
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in layers:
        rows = weights[name].reshape(1, -1)
        for bits in (8, 6, 4):
            grid = Grid.from_bits(bits)
            g = golden_search(objective_for_rows(rows, grid))
            d = grid_search(objective_for_rows(rows, grid), points)
            l1 = float(objective_for_rows(rows, grid)(np.array([[1.0]]))[0, 0])
            lines.append(
                f"| {name} | {bits} | {g.alpha[0]:.4f} | {g.mse[0]:.3e} | {g.evaluations} | "
                f"{d.alpha[0]:.4f} | {d.mse[0]:.3e} | {g.mse[0] / d.mse[0]:.4f} | {l1:.3e} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="coarser dense grids")
    parser.add_argument("--layer", default="layer2.0.conv2", help="layer for the figures")
    parser.add_argument("--out", default=str(IMG), help="output folder")
    args = parser.parse_args()
    torch.set_num_threads(2)
    points = 500 if args.quick else 2000
    weights = layer_weights(args.layer)
    out = Path(args.out)
    w = weights[args.layer]
    for path in (plot_loss_curves(w, args.layer, points, out), plot_local_convexity(w, args.layer, out),
                 plot_transform(w, args.layer, out)):
        print(f"wrote {path}")
    cmd = command("plot_algorithm", ["--quick"] if args.quick else [])
    print(f"\nGolden search vs a dense {points}-point alpha grid, ResNet-20 (pretrained), per-tensor "
          f"asymmetric, weight-space MSE. Produced by `{cmd}`.\n")
    print(table(weights, ["conv1", "layer1.0.conv1", args.layer, "layer3.2.conv2", "linear"], points))


if __name__ == "__main__":
    main()
