"""Shared test fixtures: run the notebook itself and read its tensors back."""

from __future__ import annotations

import os

import pytest

from tests.notebook_values import FLOAT32_CPU, run_and_read

_reader_settings = pytest.MonkeyPatch()


def pytest_configure(config):
    # nbval's kernel inherits this process's environment: for this test session only, the
    # reader's own LLAMA3_* settings are set aside, so that the stored outputs (made with
    # none of them) are what the notebook is compared against. Restored when pytest ends.
    for name in [name for name in os.environ if name.startswith("LLAMA3_")]:
        _reader_settings.delenv(name)


def pytest_unconfigure(config):
    _reader_settings.undo()


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory):
    """The notebook executed on the embedded checkpoint in float32, with its key tensors."""
    return run_and_read(tmp_path_factory.mktemp("embedded"), FLOAT32_CPU)


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
    for name in ("LLAMA3_CKPT", "LLAMA3_DEVICE", "LLAMA3_DTYPE", "LLAMA3_ROPE_SCALE_FACTOR", "LLAMA3_EXTRAS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch
