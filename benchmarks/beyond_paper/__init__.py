"""Issue 9: beyond the paper: near-lossless W4 and usable W3 weights on the shared ResNets.

Weights-only fake quantization (activations FP32, BN not folded) of every Conv/Linear layer
of the shared CIFAR-10 ResNet-20 and ResNet-56 through the public ``quantize_weights``, top-1
on the CIFAR-10 test set (10,000 images; ``--quick``: 2,000 stratified, ResNet-20 only).
Calibration: 512 seeded random TRAIN images (``ArrayDataset.calibration_batches``), used by
the rows that need data (output objective, plain/sequential bias correction, feedback
rounding); the data-free rows use none.

Outputs ``docs/results-beyond.md`` (the comparison with the issue's rows, the ablation of
each ingredient, accuracy against model size, the calibration time of ResNet-56) and
``docs/img/beyond_accuracy_vs_size.png``. Finished configurations are cached in
``benchmarks/results/beyond.json`` (rerun = resume). ``--quick`` writes to a temp folder.

Modules: ``rows`` (configurations), ``measure`` (one run), ``findings``, ``doc`` and ``plot``
(the generated doc), ``cli`` (``main``).
"""
