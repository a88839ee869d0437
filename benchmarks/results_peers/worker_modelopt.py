"""NVIDIA ModelOpt worker, run with the ModelOpt venv's python (``.peer-venvs/modelopt``):
``python worker_modelopt.py IN.pt OUT.pt``.

IN.pt (``torch.save``): ``{"model": nn.Module, "cal": [batches], "bits": b, "algorithm": a,
"threads": t, "act_bits": None|int}``. Runs ``mtq.quantize(model, cfg, forward_loop)`` with a
custom config: every ``*weight_quantizer`` ``{"num_bits": b, "axis": 0}`` (per output channel,
symmetric, TensorRT scale amax / (2**(b-1) - 1)), input quantizers off (or per-tensor
``num_bits=act_bits`` with ``act_bits``), BatchNorm off, ``"algorithm": a`` (``mse``,
``local_hessian``, ``gptq``, ``max``). Then ``mtq.fold_weight`` bakes the fake-quantized weights
into the float layers. OUT.pt: ``{"state_dict": float weights, "seconds": calibration wall time,
"version": modelopt version}`` or ``{"error": "<type>: <message>"}``.
Self-contained (imports only torch and modelopt): the benchmark's venv need not have ModelOpt.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any


def config(bits: int, algorithm: str, act_bits: int | None) -> dict[str, Any]:
    """The ``mtq.quantize`` config: per-channel ``bits``-bit weights, everything else off."""
    act = {"enable": False} if act_bits is None else {"num_bits": act_bits, "axis": None}
    algo: Any = algorithm
    if algorithm == "local_hessian":  # its default block size is NVFP4's 16; per-channel has no blocks
        algo = {"method": "local_hessian", "fp8_scale_sweep": False}
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": bits, "axis": 0}, "enable": True},
            {"quantizer_name": "*input_quantizer", **({"enable": False} if act_bits is None
                                                       else {"cfg": act, "enable": True})},
        ],
        "algorithm": algo,
    }


def run(job: dict[str, Any]) -> dict[str, Any]:
    import modelopt
    import modelopt.torch.quantization as mtq
    import torch

    torch.set_num_threads(int(job.get("threads", 1)))
    model, cal = job["model"].eval(), job["cal"]

    def forward_loop(m: Any) -> None:
        with torch.no_grad():
            for x in cal:
                m(x)

    t0 = time.perf_counter()
    q = mtq.quantize(model, config(job["bits"], job["algorithm"], job.get("act_bits")), forward_loop)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"seconds": seconds, "version": modelopt.__version__}
    if job.get("act_bits") is None:
        mtq.fold_weight(q)
        mtq.disable_quantizer(q, "*")
        out["state_dict"] = {k: v.detach().clone() for k, v in q.state_dict().items()
                             if not any(s in k for s in ("quantizer", "_amax", "_pre_quant_scale"))}
    else:
        out["model"] = q
    return out


def main(argv: list[str]) -> int:
    import torch

    job = torch.load(argv[0], weights_only=False)
    try:
        out = run(job)
    except Exception as exc:  # reported as the cell's row, not a crash of the benchmark
        out = {"error": f"{type(exc).__name__}: {exc}".strip()[:400], "trace": traceback.format_exc()[-2000:]}
    torch.save(out, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
