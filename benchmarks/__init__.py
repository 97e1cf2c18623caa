"""Benchmarks, run as modules: python -m benchmarks.NAME (a package, so that no installed package of
the same name shadows it)."""
