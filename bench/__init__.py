"""Pliny's benchmarks and crash-torture harness (run from the repo root: `python -m bench.run`)."""
