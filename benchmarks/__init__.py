"""Benchmarks of the pipeline on this machine; `python -m benchmarks --help` runs the harness."""
