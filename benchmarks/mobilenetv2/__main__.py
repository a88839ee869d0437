"""``python -m benchmarks.mobilenetv2``: see :mod:`benchmarks.mobilenetv2`."""

from benchmarks.mobilenetv2.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
