"""``requant demo``: the main job on an embedded default, with no argument needed.

Which data and model (first match wins):

1. the shared CIFAR-10 arrays and the pretrained ResNet-20 (found through
   ``$REQUANT_SHARED_DIR``, ``$REQUANT_CIFAR10_DIR``/``$REQUANT_MODELS_DIR`` or a ``shared``
   folder beside the repository), evaluated on a 2,000-image stratified test subset;
2. Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (or
   ``$REQUANT_FASHION_MNIST_DIR``) with a SmallCNN trained here on 4,000 images;
3. scikit-learn's 8x8 digits with a SmallCNN trained here in seconds.

Then W8/W6/W4 weights: min-max vs REQuant alpha vs REQuant alpha+sqrt vs the ``beyond`` recipe
(per-channel, output objective, error-feedback rounding, bias correction; calibrated on 256 unlabelled
train images, no gradient steps), the per-layer table,
the accuracy table, a report folder and, when the ``onnx`` extra is installed, the W8A8
TensorRT-ready ONNX with its verification.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .data import cifar10_available, fashion_mnist_available
from .deps import MissingDependency, install_hint, require
from .pipeline import PipelineConfig, PipelineResult, run_pipeline
from .zoo import default_weights_path

__all__ = ["DEMO_RECIPE", "DEMO_TEST_IMAGES", "choose_demo_data", "conclusion", "demo_config", "run_demo"]

DEMO_TEST_IMAGES = 2000
DEMO_BITS = (8, 6, 4)
DEMO_RECIPE = "beyond"
_INTRO = """\
REQuant demo: post-training quantization of a CNN's weights with REQuant range estimation.
For every Conv/Linear layer REQuant searches the range factor alpha in (0, 1] that minimises
the weight MSE (golden-section search on an exactly evaluated, locally convex loss), optionally
on sign(w)*sqrt|w| for a non-uniform grid. Baseline: min-max ranges (alpha = 1). No retraining.
The "beyond" recipe adds per-channel ranges chosen by each layer's output error on 256 unlabelled
train images, error-feedback rounding and bias correction (still no gradient steps).
"""


def choose_demo_data() -> tuple[str, str, str]:
    """``(data, model, why)`` for the demo: CIFAR-10 + ResNet-20, else Fashion-MNIST, else digits."""
    weights = default_weights_path("resnet20")
    if cifar10_available() and weights is not None and weights.is_file():
        return "cifar10", "resnet20", f"shared CIFAR-10 and pretrained ResNet-20 ({weights})"
    if fashion_mnist_available():
        return ("fashion-mnist", "small-cnn",
                "no shared CIFAR-10/ResNet-20 found; using Fashion-MNIST (Debian package) and a SmallCNN")
    return ("digits", "small-cnn",
            "no shared CIFAR-10/ResNet-20 or Fashion-MNIST found; using scikit-learn digits")


def _export_available() -> str | None:
    """``None`` when the ONNX export can run, else why not (with the install command)."""
    for module in ("onnx", "onnxruntime", "requant_plugin.export"):
        try:
            require(module, "the ONNX export")
        except MissingDependency as exc:
            return f"{module} is not importable ({exc.__cause__}); install it with: {install_hint('onnx')}"
    return None


def demo_config(
    report: str | Path = "reports/demo", export: str | Path | None = None, *, data: str | None = None,
    test_limit: int | None = DEMO_TEST_IMAGES, progress: bool = True, command: str = "requant demo",
) -> tuple[PipelineConfig, str]:
    """The demo's :class:`PipelineConfig` and a sentence saying why this data/model was chosen."""
    if data is None:
        data, model, why = choose_demo_data()
    else:
        model, why = ("resnet20" if data == "cifar10" else "small-cnn"), f"--data {data}"
    if export is None:
        export = Path(report) / f"{model.replace('-', '_')}_w8a8.onnx"
    cfg = PipelineConfig(
        data=data, model=model, bits=DEMO_BITS, space="sqrt", recipe=DEMO_RECIPE, report=str(report),
        export=str(export),
        export_bits=8, test_limit=test_limit, progress=progress, command=command,
    )
    return cfg, why


def run_demo(
    report: str | Path = "reports/demo", export: str | Path | None = None, *, data: str | None = None,
    test_limit: int | None = DEMO_TEST_IMAGES, progress: bool = True,
    log: Callable[[str], None] = print, command: str = "requant demo",
) -> PipelineResult:
    """Run the demo and return its result (see the module docstring)."""
    cfg, why = demo_config(report, export, data=data, test_limit=test_limit, progress=progress,
                           command=command)
    log(_INTRO)
    log(f"data/model: {why}")
    missing = _export_available()
    if missing is not None:
        log(f"export: skipped, {missing}")
        cfg = PipelineConfig(**{**cfg.__dict__, "export": None})
    log("")
    result = run_pipeline(cfg, log=log)
    log("")
    for line in conclusion(result):
        log(line)
    return result


def conclusion(result: PipelineResult) -> list[str]:
    """A few sentences that read the accuracy table for the user."""
    b = result.config.main_bits
    acc = result.accuracy[b]
    best = max((m for m in acc if m != "minmax"), key=lambda m: acc[m])
    gap = acc[best] - acc["minmax"]
    verdict = (f"REQuant keeps {gap:.2f} points more top-1 than min-max" if gap > 0 else
               "min-max is as good here (this model is easy at this width)" if gap == 0 else
               f"min-max is {-gap:.2f} points better here (small test set, easy model)")
    lines = [
        f"what happened: at W{b}, {result.config.label(best)} reaches {acc[best]:.2f}% vs min-max "
        f"{acc['minmax']:.2f}% (FP32 {result.fp32:.2f}%): {verdict}.",
    ]
    gains = [r.mse_minmax / r.mse_requant for r in result.layers if r.mse_requant > 0]
    if gains:
        lines.append(f"the per-layer weight MSE is {min(gains):.2f}x to {max(gains):.2f}x lower than "
                     "min-max's (table above).")
    if result.export is not None:
        lines.append(f"the TensorRT-ready ONNX is {result.export.path}; run 'requant inspect "
                     f"{result.export.path}' to re-check it.")
    if result.files:
        lines.append(f"open {result.files[0]} for the tables and plots (per-layer MSE, L(alpha), "
                     "accuracy vs bits).")
    return lines
