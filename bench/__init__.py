"""Benchmarks and the peer servers they measure against (not part of the package)."""
