"""Export step: TensorRT-ready ONNX through :mod:`requant_plugin.export`, then verification.

TensorRT only takes symmetric INT8 Q/DQ with zero point 0, per-channel weight scales and
per-tensor activation scales, so the export uses REQuant's alpha search on the symmetric
per-channel grid with 8-bit activations (sub-8-bit weights are emulated inside INT8
containers; the sqrt grid is not expressible as Q/DQ). Verification, all on the CPU:
``onnx.checker``, the static TensorRT-rules check, polygraphy lint, ONNX Runtime (graph
optimisations off) against the PyTorch fake-quant reference on a calibration batch, and the
top-1 accuracy in ONNX Runtime of the Q/DQ model and of the FP32 export on the same test images
as the accuracy table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .baselines import end_widths
from .config import ExportSummary, PipelineConfig
from .errors import UsageError

__all__ = ["export_and_verify", "summarize_verification"]


def summarize_verification(ver: dict[str, Any]) -> list[str]:
    """Readable lines for the ``verification`` dict of an export report."""
    lines = []
    checks = [f"onnx.checker {ver.get('onnx_checker', 'not run')}",
              f"TensorRT rules {ver.get('trt_rule_errors', '?')} error(s)"]
    if "polygraphy_lint" in ver:
        checks.append(f"polygraphy lint {ver['polygraphy_lint']}")
    lines.append("checks: " + "; ".join(checks))
    cmp = ver.get("vs_fake_quant")
    if isinstance(cmp, dict):
        outputs = cmp.get("free_running", cmp)
        if isinstance(outputs, dict) and "max_abs" in outputs:
            lines.append(f"ONNX Runtime vs PyTorch fake-quant reference: max |logit diff| "
                         f"{outputs['max_abs']:.3g}, argmax agreement "
                         f"{100 * float(outputs.get('argmax_agree', float('nan'))):.1f}%")
        forced = cmp.get("teacher_forced")
        if isinstance(forced, dict) and "codes" in forced:
            lines.append(f"integer codes (teacher-forced): {forced.get('mismatch', '?'):,} of "
                         f"{forced['codes']:,} differ (max by {forced.get('max_code_diff', '?')}), "
                         f"{forced.get('unexplained', '?')} unexplained by rounding ties")
    if "accuracy_qdq" in ver:
        fp = f" (FP32 ONNX {ver['accuracy_fp32']:.2f}%)" if "accuracy_fp32" in ver else ""
        lines.append(f"ONNX Runtime top-1 on the same test images: {ver['accuracy_qdq']:.2f}%{fp}")
    return lines


def export_and_verify(
    model: nn.Module, calib: list[Tensor], loader: Iterable[Sequence[Tensor]], cfg: PipelineConfig,
    log: Callable[[str], None], widths: Mapping[str, int] | None = None,
) -> ExportSummary:
    """Export ``model`` (float) with REQuant ranges to ``cfg.export`` and verify the file (``widths``: per-layer
    weight bits, the mixed-precision column's at the export's width)."""
    from ..export import check_tensorrt_compat, export_onnx_qdq, verify_export

    assert cfg.export is not None
    path = Path(cfg.export)
    if path.suffix.lower() != ".onnx":
        raise UsageError(f"--export {path}: the file name must end in .onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    fp32_path = path.with_name(path.stem + "_fp32.onnx")
    wbits, abits = cfg.export_weight_bits, 8
    if cfg.act_bits not in (None, 8):
        log(f"      note : TensorRT INT8 needs 8-bit activations; exporting A8 (not A{cfg.act_bits})")
    if cfg.space == "sqrt":
        log("      note : the sqrt grid is not expressible as Q/DQ; the ONNX uses REQuant's alpha on the")
        log("             uniform symmetric per-channel grid (see docs/limitations.md)")
    ends = {name: {"bits": b} for name, b in end_widths(model, cfg.end_bits).items()}
    if ends:
        log(f"      note : {sorted(ends)} exported at W{cfg.end_bits} (--end-bits); activations stay A8")
    overrides = ends or None
    if widths:
        overrides = {name: {"bits": b} for name, b in widths.items()}
        log(f"      note : weights at the mixed-precision widths of the W{wbits} budget (--mixed-precision); "
            "activations stay A8")
    report = export_onnx_qdq(model, calib, path, weight_bits=wbits, act_bits=abits, space="uniform",
                             per_channel=True, fp32_path=fp32_path, progress=cfg.progress, overrides=overrides)
    log(f"      wrote {path} ({report.file_size:,} bytes, opset {report.opset}): "
        f"{len(report.weights)} quantized weights, {len(report.activations)} quantized activations")
    ver = verify_export(report, model=model, images=calib[0], fp32_path=fp32_path,
                        test_loader=loader, progress=cfg.progress)
    for line in summarize_verification(ver):
        log(f"      {line}")
    violations = [str(v) for v in check_tensorrt_compat(path)]
    for v in violations:
        log(f"        - {v}")
    acc = ver.get("accuracy_qdq")
    fp32_acc = ver.get("accuracy_fp32")
    return ExportSummary(path, wbits, abits, str(report).rstrip(), violations,
                         None if acc is None else float(acc),
                         None if fp32_acc is None else float(fp32_acc), summarize_verification(ver))
