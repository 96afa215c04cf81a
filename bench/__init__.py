"""Benchmarks: each module prints JSON lines and a table (separate from the tests)."""
