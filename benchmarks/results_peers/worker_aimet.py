"""AIMET worker, run with the AIMET venv's python (``.peer-venvs/aimet``):
``python worker_aimet.py IN.pt OUT.pt`` (same IN/OUT format as ``worker_modelopt.py``).

The model first goes through AIMET's ``prepare_model`` (functional ops become modules).
``adaround``: ``Adaround.apply_adaround(prepared, dummy, AdaroundParameters(cal, len(cal),
default_num_iterations=iters), default_param_bw=bits, default_quant_scheme=post_training_tf_enhanced,
default_config_file=<per-channel>)`` (the API's default scheme: each weight range searched for SQNR before the
rounding is learned), then a ``QuantizationSimModel`` with the AdaRound encodings frozen
(``set_and_freeze_param_encodings``). ``seqmse``: ``QuantizationSimModel(prepared, dummy,
default_param_bw=bits, config_file=<per-channel>)`` then ``apply_seq_mse(sim, cal, num_candidates=20)``.
<per-channel>: AIMET's own ``default_config_per_channel.json`` (weights symmetric, per output channel for
Conv and Gemm). The weights handed back are each weight quantizer's output (fake-quantized float values).

AIMET imports torchvision, whose only wheel here is a CUDA build: its compiled ops do not load beside the
CPU torch, and torchvision's import then fails registering fake kernels for ``torchvision::nms`` /
``torchvision::qnms`` (``operator torchvision::nms does not exist``). :func:`import_torchvision` declares
those two operators' schemas (no kernel: detection ops, never called by these classifiers) and imports it
again; where torchvision's ops load, nothing is declared.
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

#: the operators torchvision's import registers fake kernels for without checking that its ops loaded
STAND_IN_OPS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIBRARIES: list[Any] = []  # a torch.library.Library lives as long as its Python object


def import_torchvision() -> str:
    """Import torchvision; ``"stand-in"`` when its compiled ops do not load and :data:`STAND_IN_OPS` were
    declared for it, else ``"native"``."""
    import torch

    try:
        import torchvision
        return "native"
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema in STAND_IN_OPS:
        lib.define(schema)
    _LIBRARIES.append(lib)
    import torchvision  # noqa: F401
    return "stand-in"


def _weights(sim: Any) -> dict[str, Any]:
    import torch

    out = {}
    for name, mod in sim.model.named_modules():
        quantizers = getattr(mod, "param_quantizers", None)  # a ModuleDict in AIMET 2
        q = quantizers["weight"] if quantizers is not None and "weight" in quantizers else None
        if q is None:
            continue
        with torch.no_grad():
            w = q(mod.weight)
        out[f"{name}.weight"] = (w.dequantize() if hasattr(w, "dequantize") else w).as_subclass(torch.Tensor).detach()
    return out


def run(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torchvision = import_torchvision()
    import aimet_torch
    from aimet_torch.common.defs import QuantScheme
    from aimet_torch.quantsim import QuantizationSimModel

    torch.set_num_threads(int(job.get("threads", 1)))
    model, cal, bits = job["model"].eval(), job["cal"], int(job["bits"])
    dummy = cal[0][:1]
    config = str(Path(aimet_torch.__file__).parent / "common" / "quantsim_config" / "default_config_per_channel.json")
    t0 = time.perf_counter()
    from aimet_torch.model_preparer import prepare_model

    prepared = prepare_model(model)  # AIMET's first step: functional ops (relu, +) become modules
    if job["algorithm"] == "adaround":
        from aimet_torch.adaround.adaround_weight import Adaround, AdaroundParameters

        params = AdaroundParameters(data_loader=cal, num_batches=len(cal),
                                    default_num_iterations=int(job.get("iters") or 1000))
        with tempfile.TemporaryDirectory() as tmp:
            ada = Adaround.apply_adaround(prepared, dummy, params, path=tmp, filename_prefix="ada",
                                          default_param_bw=bits,
                                          default_quant_scheme=QuantScheme.post_training_tf_enhanced,
                                          default_config_file=config)
            sim = QuantizationSimModel(ada, dummy, quant_scheme=QuantScheme.post_training_tf, default_param_bw=bits,
                                       config_file=config)
            sim.set_and_freeze_param_encodings(encoding_path=f"{tmp}/ada.encodings")
    else:
        from aimet_torch.seq_mse import apply_seq_mse

        sim = QuantizationSimModel(prepared, dummy, quant_scheme=QuantScheme.post_training_tf, default_param_bw=bits,
                                   config_file=config)
        apply_seq_mse(sim, cal, num_candidates=20)
    seconds = time.perf_counter() - t0
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.update(_weights(sim))
    return {"seconds": seconds, "state_dict": state, "version": getattr(aimet_torch, "__version__", "?"),
            "torchvision": torchvision}


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
