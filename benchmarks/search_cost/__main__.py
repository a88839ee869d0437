"""``python -m benchmarks.search_cost``: see :mod:`benchmarks.search_cost`."""

from benchmarks.search_cost.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
