"""``python -m benchmarks.convexity``: see :mod:`benchmarks.convexity`."""

from benchmarks.convexity.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
