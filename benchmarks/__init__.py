"""Benchmarks of the input pipeline and the training step (see benchmarks/README.md)."""
