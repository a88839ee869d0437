"""Search cost: loss evaluations and seconds per layer and per model, REQuant vs the grids.

Weight sets: the shared ResNet-20 and ResNet-56 and a ResNet-50-sized set (54 tensors with
ResNet-50's real shapes, 25.5M seeded He-normal values). Per tensor, per-tensor ranges at
W4 and W8, every method is timed on the same tensor one after the other (so all share the
same machine load), including the final fake-quantization of the weight:

* REQuant (``estimate_range(..., space=uniform|sqrt)`` + ``fake_quantize``; NumPy, 1 thread);
* a 100-candidate fake-quant grid on REQuant's own objective (``alpha = i/100``,
  ``torch.fake_quantize_per_tensor_affine`` + MSE per candidate: torchao's MSE observer
  style; the issue-3 speed reference);
* torchao ``AffineQuantizedMSEObserver`` (100), the ModelOpt-style grid (39), Brevitas MSE
  (20, the real library; layer construction not timed), torch.ao ``HistogramObserver``
  (greedy; evaluations counted by wrapping ``_compute_quantization_error``).

Seconds are the best of ``--repeats`` runs per tensor (the CPU is shared). Ratios are
method seconds / REQuant (uniform) seconds from the same run. Writes the ``search-cost``
section of ``docs/results.md``, the ``speed`` section of ``docs/core-results.md`` and
``benchmarks/results/search_cost*.json``. ``--quick``: ResNet-20 at W4. Exits non-zero when a
speed claim fails: REQuant faster than the torchao and Brevitas MSE searches on every set, and
than the ModelOpt-style grid and the 100-point torch grid on the ResNet-50-sized set.

Modules: ``methods`` (the timed methods), ``measure`` (timings, summary, claims), ``doc`` (the
generated tables), ``cli`` (``main``; ``--from-json`` rebuilds the docs from the cached JSON).
"""
