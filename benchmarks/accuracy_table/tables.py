"""The accuracy and ablation tables of docs/results.md (rows = methods, columns = model x bits)."""

from __future__ import annotations

from benchmarks.accuracy_table.configs import FOLDED, MAIN, METHODS, PER_CHANNEL, SHORT, Config
from benchmarks.accuracy_table.run import Runner
from benchmarks.harness.markdown import DASH, fmt, md_table
from benchmarks.harness.runtime import environment


def grid_table(
    runner: Runner,
    models: tuple[str, ...],
    bits: tuple[int, ...],
    methods: tuple[str, ...],
    per_channel: bool,
    fold_bn: bool,
) -> str:
    """Rows = methods, columns = model x bits; best quantized cell per column in bold."""
    heads = ["method", "grid"] + [f"{SHORT[m]} W{b}" for m in models for b in bits]
    cols = [(m, b) for m in models for b in bits]
    vals = {k: [runner.acc(Config(m, k, b, per_channel, fold_bn)) for m, b in cols] for k in methods}
    best = [max((x for v in vals.values() if (x := v[i]) is not None), default=None) for i in range(len(cols))]
    rows = []
    fp = [runner.acc(Config(m, "fp32")) for m, _ in cols]
    rows.append(["FP32", DASH, *[fmt(x) for x in fp]])
    for k in methods:
        cells = []
        for i, x in enumerate(vals[k]):
            if x is None:
                failed = next(
                    (why for c, why in runner.failed.items() if c.method == k and c.per_channel == per_channel),
                    None,
                )
                cells.append("n/a" if failed else DASH)
            else:
                top = best[i]
                cells.append(f"**{x:.2f}**" if top is not None and x >= top else f"{x:.2f}")
        rows.append([METHODS[k].label, METHODS[k].grid, *cells])
    return md_table(heads, rows, "ll" + "r" * len(cols))


def peer_wins(
    runner: Runner,
    models: tuple[str, ...],
    bits: tuple[int, ...],
    methods: tuple[str, ...],
    per_channel: bool,
    fold_bn: bool,
) -> list[str]:
    """Cells where some peer beats both REQuant rows."""
    out = []
    for m in models:
        for b in bits:
            ours = [runner.acc(Config(m, k, b, per_channel, fold_bn)) for k in ("requant", "requant_sqrt")]
            ours_v = [x for x in ours if x is not None]
            if not ours_v:
                continue
            for k in methods:
                if METHODS[k].kind != "peer":
                    continue
                x = runner.acc(Config(m, k, b, per_channel, fold_bn))
                if x is not None and x > max(ours_v):
                    out.append(f"{SHORT[m]} W{b}: {METHODS[k].label} {x:.2f} > REQuant best {max(ours_v):.2f}")
    return out


def accuracy_section(runner: Runner, models: tuple[str, ...], bits: tuple[int, ...], cmd: str) -> str:
    """The accuracy section of docs/results.md: per tensor, BN folded, per channel, peer wins."""
    n = runner.ev.images.n
    parts = [
        "## Accuracy: weights-only quantization (activations FP32)",
        "",
        f"Command: `{cmd}`. Top-1 (%) on {n:,} CIFAR-10 test images (the shared JPEG test set, so FP32 "
        "is below the models' original figures), every Conv/Linear layer quantized at the same bit width, "
        "biases and BN in FP32. Best quantized value per column in **bold**. Seed 0; engine: ONNX Runtime "
        "CPU on the FP32 graph carrying the fake-quantized weights (identical top-1 to "
        "`requant_plugin.data.evaluate_accuracy`, checked by `--quick`).",
        "",
        f"Environment: {environment()}.",
        "",
        "Grid column: the grid each method uses when asked for an asymmetric per-tensor range — "
        "`asym` = unsigned codes with a zero point; ModelOpt's integer path is symmetric only (TensorRT "
        "scale amax/(2^(b-1)-1)); torchao's MSE observer searches symmetric candidates (-t, t) even with the "
        "asymmetric mapping. REQuant: asymmetric range [alpha*min, alpha*max] (zero point fixed); first and "
        "last layers never transformed (plain alpha search), as in the paper.",
        "",
        "### Per-tensor, BN not folded",
        "",
        grid_table(runner, models, bits, MAIN, False, False),
        "",
        "### Per-tensor, BN folded into the convolutions before quantizing",
        "",
        grid_table(runner, models, bits, FOLDED, False, True),
        "",
        "### Per-channel (output channels), BN not folded",
        "",
        "Folding BN scales each output channel by a constant, which a per-channel range absorbs, so "
        "per-channel results do not depend on folding (HistogramObserver is per-tensor only). To save CPU "
        "the MSE peers are run per channel at W4/W3 only (at W8/W6 every per-channel row is within noise "
        "of FP32).",
        "",
        "Cells marked with a dash were not run to fit the CPU budget (ResNet-56 costs about 3x ResNet-20 "
        "per evaluation): ResNet-56 per-channel W8/W6, ResNet-56 BN-folded W8, and torchao's MSE observer "
        "(100 fake-quant passes per layer) on ResNet-56 at W8/W6.",
        "",
        grid_table(runner, models, bits, PER_CHANNEL, True, False),
        "",
    ]
    wins = []
    for pc, fold, meths, name in (
        (False, False, MAIN, "per-tensor"),
        (False, True, FOLDED, "per-tensor, folded"),
        (True, False, PER_CHANNEL, "per-channel"),
    ):
        wins += [f"- {name}: {w}" for w in peer_wins(runner, models, bits, meths, pc, fold)]
    parts += ["### Where a peer wins", ""]
    parts += wins if wins else ["No peer beats the better REQuant row in any cell."]
    if runner.failed:
        parts += [
            "",
            "Not run: " + "; ".join(sorted({f"{c.method}: {why}" for c, why in runner.failed.items()})),
        ]
    return "\n".join(parts)


def ablation_section(runner: Runner, models: tuple[str, ...], bits: tuple[int, ...], cmd: str) -> str:
    """The paper's ablation: standard ranges, alpha search, transform, both (per tensor)."""
    rows_def = [
        ("Standard range (min-max)", Config("", "minmax")),
        ("alpha search only", Config("", "requant")),
        ("sqrt transform only (alpha = 1)", Config("", "transform_only")),
        ("alpha search + transform (REQuant)", Config("", "requant_sqrt")),
        (
            "alpha + transform, loss in transformed space",
            Config("", "requant_sqrt", extra=(("loss_space", "transformed"),)),
        ),
        ("alpha + transform, BN folded", Config("", "requant_sqrt", fold_bn=True)),
    ]
    cols = [(m, b) for m in models for b in bits]
    heads = ["setting"] + [f"{SHORT[m]} W{b}" for m, b in cols]
    rows = [["FP32", *[fmt(runner.acc(Config(m, "fp32"))) for m, _ in cols]]]
    for label, tmpl in rows_def:
        cells = []
        for m, b in cols:
            c = Config(m, tmpl.method, b, tmpl.per_channel, tmpl.fold_bn, tmpl.extra)
            cells.append(fmt(runner.acc(c)))
        rows.append([label, *cells])
    return "\n".join(
        [
            "## Ablation (the paper's: standard ranges vs alpha search vs transform vs both)",
            "",
            f"Command: `{cmd}`. Per-tensor, asymmetric, weights only, top-1 (%) on "
            f"{runner.ev.images.n:,} test images. The paper reports, for CIFAR-10 ResNet-18 (bit width not "
            "stated, 4 implied), standard 89.09 -> alpha + reshaping 94.67; it gives no intermediate rows.",
            "",
            md_table(heads, rows, "l" + "r" * len(cols)),
        ]
    )
