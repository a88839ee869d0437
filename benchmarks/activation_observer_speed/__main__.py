"""``python -m benchmarks.activation_observer_speed``: see :mod:`benchmarks.activation_observer_speed`."""

import sys

from benchmarks.activation_observer_speed.cli import main

if __name__ == "__main__":
    sys.exit(main())
