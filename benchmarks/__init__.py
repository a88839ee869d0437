"""Reproducible benchmarks: run each script as ``python benchmarks/<name>.py [--quick]``."""
