"""Shared test fixtures: run the notebook itself and read its tensors back."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

from notebook_run import run_notebook  # noqa: E402

# The reader's own settings must not leak into the tests (nbval's kernel inherits this
# environment): every test sets the LLAMA3_* variables it needs.
for _name in [name for name in os.environ if name.startswith("LLAMA3_")]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory):
    """The notebook executed on the embedded checkpoint in float32, with its key tensors."""
    return run_notebook(tmp_path_factory.mktemp("embedded"), env={"LLAMA3_CKPT": "", "LLAMA3_DTYPE": "float32", "LLAMA3_DEVICE": "cpu"})


@pytest.fixture(scope="session")
def tokenizer():
    """Our Llama 3 tokenizer (tokenizer_setup)."""
    import tokenizer_setup

    return tokenizer_setup.load_tokenizer(None)


@pytest.fixture(scope="session")
def meta():
    """Meta's reference tokenizer from llama-models, on the same tokenizer.model."""
    from llama_models.llama3.tokenizer import Tokenizer

    import tokenizer_setup

    return Tokenizer(tokenizer_setup.packaged_tokenizer_model())


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("LLAMA3_CKPT", "LLAMA3_DEVICE", "LLAMA3_DTYPE"):
        monkeypatch.delenv(name, raising=False)
    return os.environ
