"""Tools for maintainers: the mutation check, the GPU check."""
