"""Project scripts, run as modules: python -m scripts.NAME (a package, so that no installed package of the same name shadows it)."""
