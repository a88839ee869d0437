"""``python -m benchmarks.beyond_paper``: see :mod:`benchmarks.beyond_paper`."""

from benchmarks.beyond_paper.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
