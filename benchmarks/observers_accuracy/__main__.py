"""``python -m benchmarks.observers_accuracy``: see :mod:`benchmarks.observers_accuracy`."""

from benchmarks.observers_accuracy.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
