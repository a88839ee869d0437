"""Accuracy tables: REQuant vs the range estimators people use, on the shared CIFAR-10 ResNets.

Weights-only fake quantization (activations FP32) of every Conv/Linear layer of the shared
ResNet-20 and ResNet-56, top-1 on the CIFAR-10 test set (10,000 images), at W8/W6/W4/W3:

* per-tensor, BN not folded: min-max, percentile, ACIQ, torch.ao HistogramObserver, torchao
  AffineQuantizedMSEObserver, ModelOpt-style 39-point amax grid, Brevitas MSE, REQuant alpha,
  REQuant alpha + sqrt transform;
* per-tensor, BN folded first: min-max, REQuant alpha, REQuant + sqrt;
* per-channel: min-max and the MSE peers, REQuant alpha, REQuant + sqrt;
* the paper's ablation (standard ranges, alpha search, transform, both), REQuant settings
  explored on ResNet-20 (issue 3), and, when ``requant_plugin.qconfig`` exists, full PTQ rows.

REQuant runs through the public ``quantize_weights`` (first and last layers get the plain
alpha search, as in the paper); peers through ``benchmarks.harness.peers``. Each finished
configuration is cached in ``benchmarks/results/accuracy.json`` (rerun = resume).
``--quick``: ResNet-20 on 1,000 stratified test images, five methods at W4/W3 per tensor,
plus an ONNX Runtime vs torch agreement check; ``--smoke``: 300 images, three methods at W3.
Both check the ordering claims of the full tables and exit non-zero when one fails.

Modules: ``configs`` (methods, measurements, run plans), ``run`` (building, evaluating, caching),
``claims`` (ordering claims), ``tables`` and ``doc`` (the generated markdown), ``cli`` (``main``).
"""

from __future__ import annotations

from benchmarks.accuracy_table.claims import CLAIMS, Claim, check_claims
from benchmarks.accuracy_table.configs import METHODS, Config, Method
from benchmarks.accuracy_table.doc import setup_text
from benchmarks.accuracy_table.run import CODE, Runner, build
from benchmarks.accuracy_table.tables import grid_table, peer_wins

__all__ = [
    "CLAIMS",
    "CODE",
    "METHODS",
    "Claim",
    "Config",
    "Method",
    "Runner",
    "build",
    "check_claims",
    "grid_table",
    "peer_wins",
    "setup_text",
]
