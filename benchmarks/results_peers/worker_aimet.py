"""AIMET worker, run with the AIMET venv's python (``.peer-venvs/aimet``):
``python worker_aimet.py IN.pt OUT.pt`` (same IN/OUT format as ``worker_modelopt.py``).

``adaround``: ``Adaround.apply_adaround(model, dummy, AdaroundParameters(cal, len(cal),
default_num_iterations=iters), default_param_bw=bits, default_quant_scheme=post_training_tf)``,
then a ``QuantizationSimModel`` with the AdaRound encodings frozen
(``set_and_freeze_param_encodings``). ``seqmse``: ``QuantizationSimModel(model, dummy,
default_param_bw=bits)`` then ``apply_seq_mse(sim, cal, num_candidates=20)``. AIMET's default
quantsim config (weights symmetric, per-tensor unless the config turns per-channel on). The
weights handed back are each weight quantizer's output (fake-quantized float values).
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from typing import Any


def _weights(sim: Any) -> dict[str, Any]:
    import torch

    out = {}
    for name, mod in sim.model.named_modules():
        q = getattr(mod, "param_quantizers", {}).get("weight") if hasattr(mod, "param_quantizers") else None
        if q is None:
            continue
        with torch.no_grad():
            w = q(mod.weight)
        out[f"{name}.weight"] = (w.dequantize() if hasattr(w, "dequantize") else w).as_subclass(torch.Tensor).detach()
    return out


def run(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from aimet_torch.common.defs import QuantScheme
    from aimet_torch.quantsim import QuantizationSimModel

    torch.set_num_threads(int(job.get("threads", 1)))
    model, cal, bits = job["model"].eval(), job["cal"], int(job["bits"])
    dummy = cal[0][:1]
    t0 = time.perf_counter()
    if job["algorithm"] == "adaround":
        from aimet_torch.adaround.adaround_weight import Adaround, AdaroundParameters

        params = AdaroundParameters(data_loader=cal, num_batches=len(cal),
                                    default_num_iterations=int(job.get("iters", 1000)))
        with tempfile.TemporaryDirectory() as tmp:
            ada = Adaround.apply_adaround(model, dummy, params, path=tmp, filename_prefix="ada",
                                          default_param_bw=bits, default_quant_scheme=QuantScheme.post_training_tf)
            sim = QuantizationSimModel(ada, dummy, quant_scheme=QuantScheme.post_training_tf, default_param_bw=bits)
            sim.set_and_freeze_param_encodings(encoding_path=f"{tmp}/ada.encodings")
    else:
        from aimet_torch.seq_mse import apply_seq_mse

        sim = QuantizationSimModel(model, dummy, quant_scheme=QuantScheme.post_training_tf, default_param_bw=bits)
        apply_seq_mse(sim, cal, num_candidates=20)
    seconds = time.perf_counter() - t0
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.update(_weights(sim))
    import aimet_torch

    return {"seconds": seconds, "state_dict": state, "version": getattr(aimet_torch, "__version__", "?")}


def main(argv: list[str]) -> int:
    import torch

    job = torch.load(argv[0], weights_only=False)
    try:
        out = run(job)
    except Exception as exc:  # reported as the cell's row
        out = {"error": f"{type(exc).__name__}: {exc}".strip()[:400], "trace": traceback.format_exc()[-2000:]}
    torch.save(out, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
