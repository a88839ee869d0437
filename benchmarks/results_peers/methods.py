"""The methods of the peer table and how each one is run: ours in process, Brevitas in process
(installed in the main venv), ModelOpt and AIMET as subprocess workers in their own venvs.

Every runner returns ``(model carrying fake-quantized weights, calibration seconds)`` or raises
:class:`CellError` whose message becomes the cell's row (why it could not run).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.harness.paths import ROOT

VENVS = Path(os.environ.get("REQUANT_PEER_VENVS", str(ROOT / ".peer-venvs")))
HERE = Path(__file__).resolve().parent
#: how the optional venvs were built (shown when one is missing)
INSTALL = {
    "modelopt": "python3 -m venv .peer-venvs/modelopt && .peer-venvs/modelopt/bin/pip install "
                "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl && .peer-venvs/modelopt/bin/pip install "
                "nvidia-modelopt==0.47.0 requests huggingface_hub",
    "aimet": "python3 -m venv .peer-venvs/aimet && .peer-venvs/aimet/bin/pip install "
             "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl && .peer-venvs/aimet/bin/pip install "
             "--no-deps aimet-torch==2.42.0 torchvision==0.28.0 && .peer-venvs/aimet/bin/pip install Jinja2 PyYAML "
             "'bokeh<=3.6.3,>=3.3.0' cvxpy holoviews 'hvplot>=0.10.0' jsonschema matplotlib networkx numpy onnx "
             "'onnx_ir>=0.1.16' 'onnxscript>=0.2.0' osqp pandas psutil pybind11 safetensors scikit-learn scipy "
             "tensorboard tqdm pillow",
}
Cal = Sequence[torch.Tensor]


#: the settings: weights only, and weights with activations (the pt2e integer graph, Brevitas' fake quantization)
W_ONLY = ("W4", "W3", "W2")
W_ACTS = ("W4A8", "W4A4")
#: measured cells by ``(model, method key, setting)``
Res = dict[tuple[str, str, str], dict[str, Any]]
#: ``(model, peer key, setting, [(peer top-1, REQuant top-1) per calibration seed])``
SeedCell = tuple[str, str, str, list[tuple[float | None, float | None]]]


def bits_of(setting: str) -> tuple[int, int | None]:
    """``"W4A8"`` -> ``(4, 8)``, ``"W3"`` -> ``(3, None)``."""
    w, _, a = setting[1:].partition("A")
    return int(w), (int(a) if a else None)


class CellError(RuntimeError):
    """A cell that cannot be measured; the message is shown in the table."""


@dataclass(frozen=True)
class Method:
    """One row family: ``run(model, bits, cal, opts) -> (model, seconds)``."""

    key: str
    label: str
    system: str
    granularity: str
    run: Callable[[nn.Module, int, Cal, dict[str, Any]], tuple[nn.Module, float]]
    acts: bool = False  # supports W4A8 / W4A4 here
    weights: bool = True  # supports the weights-only settings
    same_setting: bool = True  # False: another layer-precision convention (not compared with the peers)
    gradient: bool = False  # learned rounding: iterations in the cell's cache key, issue 18's time goal against it
    iters: int | None = None  # a gradient peer's own fixed iterations per layer (None: the command's --lr-iters)

    def applies(self, act_bits: int | None) -> bool:
        """Whether this row has a cell at a setting with ``act_bits`` (``None``: weights only)."""
        return self.weights if act_bits is None else self.acts


def _ours(recipe: str) -> Callable[[nn.Module, int, Cal, dict[str, Any]], tuple[nn.Module, float]]:
    def run(model: nn.Module, bits: int, cal: Cal, opts: dict[str, Any]) -> tuple[nn.Module, float]:
        from requant_plugin import quantize_weights

        data = None if recipe == "paper" else list(cal)
        t0 = time.perf_counter()
        q, _ = quantize_weights(model, bits, recipe=recipe, calibration_data=data)
        return q, time.perf_counter() - t0

    return run


def _ours_mixed(model: nn.Module, bits: int, cal: Cal, opts: dict[str, Any]) -> tuple[nn.Module, float]:
    """``beyond`` with per-layer widths from ``mixed_precision_bits`` at ``bits`` bits per weight on average (the
    cell's model size; network sensitivity); the seconds include the error curves."""
    from requant_plugin import quantize_weights
    from requant_plugin.ptq import mixed_precision_bits

    t0 = time.perf_counter()
    widths = mixed_precision_bits(model, list(cal), float(bits))
    q, _ = quantize_weights(model, bits, recipe="beyond", calibration_data=list(cal),
                            overrides={n: {"bits": b} for n, b in widths.items()})
    return q, time.perf_counter() - t0


def _ours_pt2e(simulate: bool = True, per_observer: bool = False, end_bits: int | None = None,
               residual_bits: int | None = None, shortcuts: bool = False, weight_bits: int | None = None,
               residual_correction: bool = False,
               ) -> Callable[[nn.Module, int, Cal, dict[str, Any]], tuple[nn.Module, float]]:
    """W4A8/W4A4 through the pt2e integer graph: beyond weights on the symmetric TensorRT-style grid
    (``recipe="beyond-tensorrt"``, BN folded) pinned into the graph with ``weight_ranges``, REQuant
    activation observers, activation ranges refined on the calibration output error. ``simulate``: the
    weights are calibrated with the activations fake-quantized at ``act_bits`` (``act_bits=``: the
    compensated target and bias correction absorb the activation error too); without it, on float
    activations (the ablation row of ``act_bits``). ``per_observer``: the refinement's opt-in second stage,
    one range factor per activation observer (``layer_factors=LAYER_FACTORS``). ``end_bits``: the first and
    last layers' weights and inputs at this width (the W4A4 convention of BRECQ, QDrop and PD-Quant).
    ``residual_bits``: the operands of the residual adds (the shortcut) on their own observers at this width
    (``ObserverSpec.residual_bits``). ``shortcuts``: the weight calibration's simulation quantizes the other
    reads of each layer's input (the shortcut) too (``act_shortcuts=True``, opt-in). ``weight_bits``: the weights at
    this width instead of the cell's (8: what the cell's activations alone cost, the weights nearly exact).
    ``residual_correction``: each residual sum's mean error moved into its branch layer's bias (opt-in)."""

    def run(model: nn.Module, bits: int, cal: Cal, opts: dict[str, Any]) -> tuple[nn.Module, float]:
        act_bits = opts.get("act_bits")
        if act_bits is None:
            raise CellError("integer-graph row: run for the activation settings only (W4A8, W4A4)")
        from requant_plugin import quantize_weights
        from requant_plugin.observers.flows import quantize_pt2e
        from requant_plugin.pt2e import get_requant_quantizer
        from requant_plugin.refine import LAYER_FACTORS, RefineConfig

        bits = weight_bits or bits
        t0 = time.perf_counter()
        qw, report = quantize_weights(model, bits, recipe="beyond-tensorrt", calibration_data=list(cal),
                                      fold_bn=True, act_bits=act_bits if simulate else None, end_bits=end_bits,
                                      act_shortcuts=shortcuts, residual_correction=residual_correction)
        quantizer = get_requant_quantizer(bits, act_bits, weight_ranges=report, residual_bits=residual_bits)
        q, _ = quantize_pt2e(qw, quantizer, list(cal),
                             refine=RefineConfig(layer_factors=LAYER_FACTORS if per_observer else ()))
        return q, time.perf_counter() - t0

    return run


def _brevitas(method: str) -> Callable[[nn.Module, int, Cal, dict[str, Any]], tuple[nn.Module, float]]:
    def run(model: nn.Module, bits: int, cal: Cal, opts: dict[str, Any]) -> tuple[nn.Module, float]:
        try:
            from benchmarks.harness.peers import brevitas_ptq
        except ImportError as exc:  # pragma: no cover
            raise CellError(f"not installed: pip install --no-deps brevitas==0.13.4 ({exc})") from exc
        t0 = time.perf_counter()
        q = brevitas_ptq.quantize(model, bits, method, cal, iters=int(opts.get("lr_iters", 200)),
                                  act_bits=opts.get("act_bits"))
        return q, time.perf_counter() - t0

    return run


def run_worker(venv: str, worker: str, job: dict[str, Any], timeout: float = 8 * 3600) -> dict[str, Any]:
    """Run ``worker`` with ``VENVS/venv/bin/python`` on ``job`` (a temp ``.pt``), return its output dict."""
    python = VENVS / venv / "bin" / "python"
    if not python.is_file():
        raise CellError(f"not installed: {INSTALL[venv]}")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.pt", Path(tmp) / "out.pt"
        torch.save(job, src)
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(job.get("threads", 1)))
        proc = subprocess.run([str(python), str(HERE / worker), str(src), str(dst)], env=env,
                              capture_output=True, text=True, timeout=timeout)
        if not dst.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise CellError(f"{venv} worker failed (exit {proc.returncode}): {tail[0][:300]}")
        out: dict[str, Any] = torch.load(dst, weights_only=False)
    if "error" in out:
        raise CellError(f"{venv}: {out['error']}")
    return out


def _load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` with ``state`` loaded (biases added by the peer are created first)."""
    import copy

    out = copy.deepcopy(model).eval()
    for name, mod in out.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod.bias is None and f"{name}.bias" in state:
            mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[0]))
    missing = [k for k in out.state_dict() if k not in state]
    if missing:
        raise CellError(f"peer returned no value for {missing[:3]}")
    out.load_state_dict({k: state[k] for k in out.state_dict()})
    return out


def _worker(venv: str, worker: str, algorithm: str
            ) -> Callable[[nn.Module, int, Cal, dict[str, Any]], tuple[nn.Module, float]]:
    def run(model: nn.Module, bits: int, cal: Cal, opts: dict[str, Any]) -> tuple[nn.Module, float]:
        job = dict(model=model, cal=list(cal), bits=bits, algorithm=algorithm, threads=torch.get_num_threads(),
                   act_bits=opts.get("act_bits"), iters=opts.get("lr_iters"))
        out = run_worker(venv, worker, job)
        if out.get("model") is not None:
            return out["model"], float(out["seconds"])
        return _load_state(model, out["state_dict"]), float(out["seconds"])

    return run


METHODS: list[Method] = [
    Method("paper", "REQuant paper (alpha + sqrt, per-tensor, no data)", "ours", "per-tensor", _ours("paper")),
    Method("beyond", "REQuant beyond (output obj. + feedback + bias corr.)", "ours", "per-channel", _ours("beyond")),
    Method("beyond-mixed", "REQuant beyond, mixed precision at the cell's size (bits per weight on average)", "ours",
           "per-channel", _ours_mixed, same_setting=False),
    Method("pt2e", "REQuant pt2e integer graph (beyond weights + REQuant acts, refined)", "ours", "per-channel sym",
           _ours_pt2e(), acts=True, weights=False),
    Method("pt2e-layers", "REQuant pt2e, + one activation range factor per observer (opt-in layer_factors)",
           "ours", "per-channel sym", _ours_pt2e(per_observer=True), acts=True, weights=False),
    Method("pt2e-shortcuts", "REQuant pt2e, + shortcut reads quantized in the weight calibration (opt-in "
           "act_shortcuts)", "ours", "per-channel sym", _ours_pt2e(shortcuts=True), acts=True, weights=False),
    Method("pt2e-resmean", "REQuant pt2e, + residual sums' mean error into the branch biases (opt-in "
           "residual_correction)", "ours", "per-channel sym", _ours_pt2e(residual_correction=True), acts=True,
           weights=False),
    Method("pt2e-ends8", "REQuant pt2e, first and last layer 8-bit (weights and inputs; BRECQ/QDrop/PD-Quant "
           "convention)", "ours", "per-channel sym", _ours_pt2e(end_bits=8), acts=True, weights=False,
           same_setting=False),
    Method("pt2e-ends8-layers", "REQuant pt2e, first and last layer 8-bit, + one activation range factor per observer",
           "ours", "per-channel sym", _ours_pt2e(per_observer=True, end_bits=8), acts=True, weights=False,
           same_setting=False),
    Method("pt2e-res8", "REQuant pt2e, residual adds' operands 8-bit (residual_bits=8)", "ours", "per-channel sym",
           _ours_pt2e(residual_bits=8), acts=True, weights=False, same_setting=False),
    Method("pt2e-ends8-res8", "REQuant pt2e, first and last layer and residual adds' operands 8-bit", "ours",
           "per-channel sym", _ours_pt2e(end_bits=8, residual_bits=8), acts=True, weights=False, same_setting=False),
    Method("pt2e-w8", "REQuant pt2e, 8-bit weights, the cell's activations (what the activations alone cost)",
           "ours", "per-channel sym", _ours_pt2e(weight_bits=8), acts=True, weights=False, same_setting=False),
    Method("pt2e-float-acts", "REQuant pt2e, weights calibrated on float activations (act_bits ablation)", "ours",
           "per-channel sym", _ours_pt2e(simulate=False), acts=True, weights=False),
    Method("brevitas-gptq", "Brevitas GPTQ + bias corr.", "Brevitas", "per-channel", _brevitas("gptq"), acts=True),
    Method("brevitas-gpfq", "Brevitas GPFQ + bias corr.", "Brevitas", "per-channel", _brevitas("gpfq"), acts=True),
    Method("brevitas-lr", "Brevitas learned round (AdaRound) + bias corr.", "Brevitas", "per-channel",
           _brevitas("learned_round"), acts=True, gradient=True),
    Method("modelopt-mse", "ModelOpt mse", "ModelOpt", "per-channel sym",
           _worker("modelopt", "worker_modelopt.py", "mse")),
    Method("modelopt-lh", "ModelOpt local_hessian", "ModelOpt", "per-channel sym",
           _worker("modelopt", "worker_modelopt.py", "local_hessian")),
    Method("modelopt-gptq", "ModelOpt gptq", "ModelOpt", "per-channel sym",
           _worker("modelopt", "worker_modelopt.py", "gptq")),
    Method("aimet-adaround", "AIMET AdaRound", "AIMET", "per-channel sym",
           _worker("aimet", "worker_aimet.py", "adaround"), gradient=True),
    Method("aimet-adaround-15k", "AIMET AdaRound 15k iter. (its default)", "AIMET", "per-channel sym",
           _worker("aimet", "worker_aimet.py", "adaround"), gradient=True, iters=15_000),
    Method("aimet-seqmse", "AIMET SeqMSE", "AIMET", "per-channel sym", _worker("aimet", "worker_aimet.py", "seqmse")),
]
BY_KEY = {m.key: m for m in METHODS}
#: the gradient-based peers (learned rounding)
GRADIENT_PEERS = tuple(m.key for m in METHODS if m.gradient)
QUICK_METHODS = tuple(m.key for m in METHODS)
