"""``python -m benchmarks.coverage``: see :mod:`benchmarks.coverage`."""

from benchmarks.coverage.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
