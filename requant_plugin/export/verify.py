"""CPU verification of a Q/DQ export: ONNX checker, polygraphy lint, ONNX Runtime.

* :func:`onnx_full_check`: ``onnx.checker.check_model(full_check=True)`` (with shape inference);
* :func:`polygraphy_lint`: ``polygraphy check lint`` (ONNX + ONNX Runtime based lint);
* :func:`ort_predict` / :func:`ort_accuracy`: ONNX Runtime CPU; ``optimize=False`` uses
  ``ORT_DISABLE_ALL`` so Q/DQ run as written (no integer-kernel fusion), the reference for
  bit-exact comparisons;
* :func:`compare_outputs`: max |a - b|, in absolute terms and in float32 ulps;
* :func:`verify_export`: all of the above on an :class:`~.report.ExportReport`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..deps import install_hint, require
from .calibrate import as_batch
from .report import ExportReport
from .runtime import session
from .trt_rules import check_tensorrt_compat


def onnx_full_check(path: str | os.PathLike[str]) -> None:
    """Raise ``onnx.checker.ValidationError`` unless the file passes the full check."""
    onnx = require("onnx", "requant_plugin.export")
    onnx.checker.check_model(os.fspath(path), full_check=True)


def polygraphy_executable() -> str | None:
    """The ``polygraphy`` CLI next to this Python, else on PATH, else None."""
    beside = Path(sys.executable).parent / "polygraphy"
    return str(beside) if beside.is_file() else shutil.which("polygraphy")


def polygraphy_lint(path: str | os.PathLike[str], *, timeout: float = 300.0) -> dict[str, Any]:
    """Run ``polygraphy check lint`` on ``path``.

    Returns ``{"passed": bool, "failing": [...], "summary": {...}}`` from polygraphy's JSON
    report. Raises ImportError (naming the extra) when polygraphy or its onnx-graphsurgeon
    dependency is missing.
    """
    exe = polygraphy_executable()
    if exe is None:
        raise ImportError(f"the polygraphy CLI is not installed; install it with: {install_hint('polygraphy')}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lint.json"
        env = dict(os.environ, POLYGRAPHY_AUTOINSTALL_DEPS="0")
        proc = subprocess.run(
            [exe, "check", "lint", os.fspath(path), "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        text = proc.stdout + proc.stderr
        if "is required but could not be imported" in text:
            missing = text.split("Module: '")[1].split("'")[0] if "Module: '" in text else "a module"
            raise ImportError(
                f"polygraphy lint needs {missing!r}; install it with: "
                f"pip install {missing.replace('_', '-')} (or {install_hint('polygraphy')})"
            )
        summary: dict[str, Any] = {}
        if out.is_file():
            summary = json.loads(out.read_text()).get("summary", {})
    failing = list(summary.get("failing", []))
    return {
        "passed": proc.returncode == 0 and not failing,
        "failing": failing,
        "returncode": proc.returncode,
        "log_tail": text[-2000:],
    }


def ort_predict(
    model: Any,
    inputs: Any,
    *,
    optimize: bool = False,
    batch_size: int = 256,
    threads: int = 0,
) -> np.ndarray:
    """Outputs of the first graph output for ``inputs`` (an array/tensor or an iterable of batches)."""
    sess = session(model, optimize=optimize, threads=threads)
    name = sess.get_inputs()[0].name
    batches: Iterable[Any]
    if hasattr(inputs, "shape"):
        x = as_batch(inputs)
        batches = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
    else:
        batches = inputs
    outs = [sess.run(None, {name: as_batch(b)})[0] for b in batches]
    return np.concatenate(outs, axis=0)


def ort_accuracy(
    model: Any,
    loader: Iterable[Sequence[Any]],
    *,
    optimize: bool = False,
    threads: int = 0,
    progress: bool = False,
) -> float:
    """Top-1 accuracy (%) of an ONNX classifier on ``(images, labels)`` batches."""
    from tqdm.auto import tqdm

    sess = session(model, optimize=optimize, threads=threads)
    name = sess.get_inputs()[0].name
    correct = seen = 0
    for images, labels in tqdm(loader, desc="ORT eval", unit="batch", disable=not progress):
        logits = sess.run(None, {name: as_batch(images)})[0]
        y = labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)
        correct += int((logits.argmax(axis=1) == y).sum())
        seen += len(y)
    if seen == 0:
        raise ValueError("the loader yielded no samples")
    return 100.0 * correct / seen


def compare_outputs(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """``max_abs``, ``max_ulp`` (float32 units in the last place), ``exact`` fraction, ``argmax_agree``."""
    a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a32.shape != b32.shape:
        raise ValueError(f"shape mismatch: {a32.shape} vs {b32.shape}")
    diff = np.abs(a32.astype(np.float64) - b32.astype(np.float64))
    ulp = np.spacing(np.maximum(np.abs(a32), np.abs(b32)))
    agree = float(np.mean(a32.argmax(-1) == b32.argmax(-1))) if a32.ndim >= 2 else 1.0
    return {
        "max_abs": float(diff.max(initial=0.0)),
        "max_ulp": float((diff / ulp).max(initial=0.0)),
        "exact": float(np.mean(diff == 0)),
        "argmax_agree": agree,
    }


def _output_arrays(out: Any, expected: int) -> list[np.ndarray]:
    """The tensors of a model output (a Tensor, or a tuple/list/dict of them, flattened in order as
    the ONNX export orders its outputs) as float arrays; ``expected``: the ONNX graph's count."""
    import torch

    leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    if len(leaves) != expected:
        raise ValueError(f"the reference model returns {len(leaves)} tensors but the ONNX graph has {expected} "
                         "outputs: compare the export with ONNX Runtime only (verify_export without model=)")
    return [t.detach().float().numpy() for t in leaves]


def _compare_all(ort: list[np.ndarray], ref: list[np.ndarray]) -> dict[str, float]:
    """:func:`compare_outputs` over every output: the worst ``max_abs``/``max_ulp``/``argmax_agree``
    and the element-weighted ``exact`` fraction."""
    parts = [compare_outputs(a, b) for a, b in zip(ort, ref, strict=True)]
    sizes = [max(np.asarray(a).size, 1) for a in ort]
    return {
        "max_abs": max(p["max_abs"] for p in parts),
        "max_ulp": max(p["max_ulp"] for p in parts),
        "exact": float(sum(p["exact"] * n for p, n in zip(parts, sizes, strict=True)) / sum(sizes)),
        "argmax_agree": min(p["argmax_agree"] for p in parts),
    }


def compare_with_reference(
    path: str | os.PathLike[str],
    reference: Any,
    images: Any,
    *,
    tol: float = 1e-3,
) -> dict[str, Any]:
    """Compare ONNX Runtime (ORT_DISABLE_ALL) with the fake-quant ``reference`` on ``images``.

    * ``free_running``: :func:`compare_outputs` of the final outputs, each runtime on its own;
    * ``teacher_forced``: every quantized tensor's int8 codes, with the reference fed ORT's own
      DequantizeLinear outputs (see :mod:`.reference`): ``codes`` compared, ``mismatch``,
      ``max_code_diff``, ``unexplained`` = mismatches whose pre-rounding value ``x / s`` is not
      within ``tol`` of a rounding tie (float32 summation order explains the others; a wrong
      scale, axis, weight or placement shows up as unexplained), and ``outputs`` (the final
      outputs compared under forcing).
    """
    import torch

    from .reference import recording
    from .runtime import with_outputs

    onnx = require("onnx", "requant_plugin.export")
    proto = onnx.load(os.fspath(path))
    consumers = {i: n for n in proto.graph.node for i in n.input}
    sites: dict[str, tuple[str, str, float]] = {}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        dq = consumers.get(node.output[0])
        if dq is not None and dq.op_type == "DequantizeLinear":
            sites[node.input[0]] = (node.output[0], dq.output[0], float(inits[node.input[1]]))
    out_names = [o.name for o in proto.graph.output]
    names = out_names + [n for q, dq, _ in sites.values() for n in (q, dq)]
    sess = session(with_outputs(proto, names), optimize=False)
    x = as_batch(images)
    values = dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x}), strict=False))
    xt = torch.from_numpy(x)
    with torch.no_grad():
        free = _output_arrays(reference(xt), len(out_names))
        forced = {t: torch.from_numpy(values[dq]) for t, (_, dq, _) in sites.items()}
        with recording(forced) as rec:
            tf = _output_arrays(reference(xt), len(out_names))
    total = mismatch = unexplained = max_diff = 0
    missing = sorted(set(sites) - set(rec.codes))
    for t, (q, _, scale) in sites.items():
        if t not in rec.codes:
            continue
        ort_codes = values[q].astype(np.int64)
        ref_codes = rec.codes[t].numpy().astype(np.int64)
        diff = np.abs(ort_codes - ref_codes)
        r = np.abs(rec.inputs[t].numpy().astype(np.float64) / np.float64(np.float32(scale)))
        near_tie = np.abs(r - np.floor(r) - 0.5) < tol
        total += diff.size
        mismatch += int((diff > 0).sum())
        unexplained += int(((diff > 0) & ~near_tie).sum())
        max_diff = max(max_diff, int(diff.max(initial=0)))
    ort_out = [values[n] for n in out_names]
    return {
        "free_running": _compare_all(ort_out, free),
        "teacher_forced": {
            "codes": total,
            "mismatch": mismatch,
            "unexplained": unexplained,
            "max_code_diff": max_diff,
            "sites": len(sites),
            "sites_not_in_reference": missing,
            "outputs": _compare_all(ort_out, tf),
        },
    }


def verify_export(
    report: ExportReport,
    *,
    model: Any = None,
    images: Any = None,
    fp32_path: str | os.PathLike[str] | None = None,
    test_loader: Iterable[Sequence[Any]] | None = None,
    lint: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the CPU checks on ``report.path`` and store the results in ``report.verification``.

    * ``onnx_checker``: "ok" or the error; ``trt_rules``: number of rule errors;
    * ``polygraphy_lint``: passed / failing nodes (skipped with the reason if not installed);
    * with ``model`` and ``images``: ``vs_fake_quant``: :func:`compare_with_reference` of ORT
      (ORT_DISABLE_ALL) and :func:`~.reference.fake_quant_reference` (float32 graphs only);
    * with ``test_loader``: ``accuracy_qdq`` and, with ``fp32_path``, ``accuracy_fp32`` (ORT).
    """
    res: dict[str, Any] = {}
    try:
        onnx_full_check(report.path)
        res["onnx_checker"] = "ok"
    except Exception as exc:
        res["onnx_checker"] = f"FAILED: {exc}"
    res["trt_rule_errors"] = len([v for v in check_tensorrt_compat(report.path) if v.severity == "error"])
    if lint:
        try:
            lint_res = polygraphy_lint(report.path)
            res["polygraphy_lint"] = "passed" if lint_res["passed"] else f"FAILED: {lint_res['failing'][:5]}"
        except ImportError as exc:
            res["polygraphy_lint"] = f"skipped: {exc}"
    if model is not None and images is not None and not report.fp16:
        from .reference import fake_quant_reference

        ref = fake_quant_reference(model, report)
        res["vs_fake_quant"] = compare_with_reference(report.path, ref, images)
    if test_loader is not None:
        loader = list(test_loader)
        res["accuracy_qdq"] = ort_accuracy(report.path, loader, optimize=False, progress=progress)
        if fp32_path is not None:
            res["accuracy_fp32"] = ort_accuracy(fp32_path, loader, optimize=False, progress=progress)
    report.verification.update(res)
    return res
