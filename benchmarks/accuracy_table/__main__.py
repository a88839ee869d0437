"""``python -m benchmarks.accuracy_table``: see :mod:`benchmarks.accuracy_table`."""

from benchmarks.accuracy_table.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
