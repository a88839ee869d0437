"""Shared benchmark harness, imported as ``benchmarks.harness.<module>``:

``paths`` (repository, docs, results, quick-output and shared folders), ``runtime`` (seeds,
threads, the command and environment lines, progress, timing), ``data`` (CIFAR-10 images and
calibration batches, the shared ResNets, per-layer weight rewriting, ResNet-50-sized weights),
``evaluate`` (top-1 with ONNX Runtime or torch), ``cache`` (the result cache and the code digest
of the whole ``requant_plugin`` package), ``markdown`` (tables, generated doc blocks),
``peers`` (the peer range estimators) and ``integrations`` (the one bridge to code that lives
only in an integration script).
"""
