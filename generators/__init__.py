"""Generators of committed files: images/, the Chinese edition, the embedded checkpoint, test
strings."""
