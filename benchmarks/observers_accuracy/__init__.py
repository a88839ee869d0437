"""Full PTQ accuracy with the REQuant observers: torch.ao FX (W8A8, x86 int8) and torchao pt2e (W4A8, W4A4).

For each shared CIFAR-10 ResNet (ResNet-20 and ResNet-56, all 10,000 test images), in one run and
on the same calibration batches:

* **FX W8A8**, ``convert_fx`` lowered to x86 (real int8 kernels, converted module types checked):
  torch's default x86 qconfig mapping (``HistogramObserver`` + ``PerChannelMinMaxObserver``) vs
  ``get_requant_qconfig_mapping()``, plus the same two REQuant variants as below;
* **pt2e W4A8 and W4A4**, ``X86InductorQuantizer``, decomposed q/dq honouring the 4-bit
  ``quant_min``/``quant_max``: torchao's default observers on the same specs vs
  ``get_requant_quantizer()``, plus three REQuant variants (REQuant's plain weight MSE, rho = 0;
  REQuant activations with min-max weights; the sqrt-space weight range);
* **weights only**, W4 per channel on the BN-folded model: min-max, rho = 0, rho = 0.467 and
  the sqrt-space range, and (ResNet-20) the same per layer with the logit MSE it causes.

Results are cached per configuration in ``benchmarks/results/observers_accuracy.json`` (a rerun
resumes; ``--fresh`` ignores the cache) and written to ``docs/observers-results.md``
(section ``accuracy``, or ``accuracy-quick`` for ``--quick``: ResNet-20, 1,000 test images,
8 calibration batches).

Modules: ``run`` (the configurations, cached), ``diagnostics`` (weights-only W4), ``doc`` (the
tables), ``seeds`` (the multi-seed FX summary and figure), ``cli`` (``main``).
"""

from __future__ import annotations

from benchmarks.observers_accuracy.cli import main
from benchmarks.observers_accuracy.seeds import FX_VARIANTS, plot_seeds, seeds_markdown

__all__ = ["FX_VARIANTS", "main", "plot_seeds", "seeds_markdown"]
