"""``python -m benchmarks.results_peers``: see :mod:`benchmarks.results_peers`."""

from benchmarks.results_peers.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
