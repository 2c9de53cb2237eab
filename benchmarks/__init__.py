"""Benchmark scripts: each prints a table whose last line is its headline ratio."""
