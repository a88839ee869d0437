"""Activation calibration: REQuantObserver vs torch's HistogramObserver, speed and output-range MSE.

Every activation quantization point of the shared ResNet-20 (``prepare_fx`` with the x86
mapping) gets a *tap* observer that feeds the same tensor to a ``HistogramObserver`` and a
``REQuantObserver`` on the same range (x86's 7-bit ``0..127`` and 4-bit ``0..15``), timing each
call; the two run in alternating order on every batch so that both see the same machine load.
Reported per range:

* calibration time per batch (wall and CPU seconds summed over the quantization points) and
  the speed-up, plus the one-off ``calculate_qparams`` time;
* output-range MSE: the mean squared error of each observer's (scale, zero point) on the
  calibration activations and on held-out test activations, summed over the points, the
  median per-point ratio and the number of points where REQuant is at least as good.

``--repeat N`` (default 5) times the calibration N times and reports the run with the median
speed-up next to the speed-ups of all runs (this shared machine's timings vary by about 10 %).
``--quick``: 4 calibration batches of 32 and 128 held-out images, one run; ``--threads 1`` repeats the
measurement with single-threaded torch (its own section); ``--sample-size all`` bins every value
(the reference for the subsample's MSE; printed, not written). The markdown table goes to
``docs/observers-results.md`` (section ``activation-speed``; ``--no-write`` to skip).

Modules: ``tap`` (the timing tap observer and its summary), ``doc`` (the tables), ``cli`` (``main``).
"""

from __future__ import annotations

from benchmarks.activation_observer_speed.cli import main
from benchmarks.activation_observer_speed.tap import DEFAULT_SAMPLE_SIZE, Tap

__all__ = ["DEFAULT_SAMPLE_SIZE", "Tap", "main"]
