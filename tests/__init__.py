"""The test suite (a package, so that tests.support is this folder and not an installed package)."""
