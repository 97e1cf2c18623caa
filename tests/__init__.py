"""The test suite (a package, so that tests.notebook_values is this folder and not an installed package)."""
