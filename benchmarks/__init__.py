"""Reproducible benchmarks, run from the repository root as ``python -m benchmarks.<name> [--quick]``.

``benchmarks.harness`` holds what they share (paths, runtime setup, data, evaluation, the result
cache keyed by the library's code digest, markdown writing, the peer estimators); each benchmark
is a module or a small package with a ``__main__``. ``python -m benchmarks.run_all [--quick|--smoke]``
runs the core set.
"""
