"""Shared test fixtures: run the notebook itself and read its tensors back."""

from __future__ import annotations

import json
import os

import pytest
import torch
from llama_models.llama3.tokenizer import Tokenizer

import tokenizer_setup
from plumbing import run_settings
from plumbing.checkpoint_files import EMBEDDED_CHECKPOINT
from tests.support import parity_runs
from tests.support.notebook_values import FLOAT32_CPU, bpe_parity_strings, run_and_read

_reader_settings = pytest.MonkeyPatch()


def pytest_configure(config):
    # nbval's kernel inherits this process's environment: for this test session only, the
    # reader's own LLAMA3_* settings are set aside, so that the stored outputs (made with
    # none of them) are what the notebook is compared against. Restored when pytest ends.
    for name in [name for name in os.environ if name.startswith("LLAMA3_")]:
        _reader_settings.delenv(name)


def pytest_unconfigure(config):
    _reader_settings.undo()


def snapshot(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory):
    """The notebook executed once on the embedded checkpoint in float32, the configuration most
    tests read: its tensors, and in the same kernel its tokenizer on the parity strings, its
    generations, the learning section's gradients, perplexities and LoRA, and the parity tests'
    long prompt and bfloat16 pass through its `forward`; the checkpoint folder before and
    after."""
    before = snapshot(EMBEDDED_CHECKPOINT)
    strings = tmp_path_factory.mktemp("bpe") / "strings.json"
    strings.write_text(json.dumps(bpe_parity_strings()), encoding="utf-8")
    also = [("bpe", str(strings)), ("generations",), ("sampling",)]
    also += [("gradients",), ("quantization",), ("silent_bugs",), ("long_inputs",)]
    also += [("perplexities",), parity_runs.LORA]
    also += parity_runs.THROUGH_FORWARD  # the parity tests' long prompt and bfloat16 pass
    run = run_and_read(tmp_path_factory.mktemp("embedded"), FLOAT32_CPU, also=also)
    run["bpe"] = json.loads(run["files"]["bpe"].read_text(encoding="utf-8"))
    run["generations"] = json.loads(run["files"]["generations"].read_text())
    run["generations"]["sampling"] = json.loads(run["files"]["sampling"].read_text())
    run["learning"] = torch.load(run["files"]["gradients"], weights_only=True)
    run["quantization"] = torch.load(run["files"]["quantization"], weights_only=True)
    run["silent_bugs"] = torch.load(run["files"]["silent_bugs"], weights_only=True)
    run["long_inputs"] = torch.load(run["files"]["long_inputs"], weights_only=True)
    run["folder_before"], run["folder_after"] = before, snapshot(EMBEDDED_CHECKPOINT)
    return run


@pytest.fixture(scope="session")
def tokenizer():
    """Our Llama 3 tokenizer (tokenizer_setup)."""
    return tokenizer_setup.load_tokenizer(None)


@pytest.fixture(scope="session")
def meta():
    """Meta's reference tokenizer from llama-models, on the same tokenizer.model."""
    return Tokenizer(tokenizer_setup.packaged_tokenizer_model())


@pytest.fixture
def clean_env(monkeypatch):
    for name in run_settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """The embedded checkpoint and random ones of other shapes (tests/support/parity_runs.py)."""
    return parity_runs.make_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def runs(checkpoints, tmp_path_factory, embedded_run):
    """Every notebook run and reference model the parity tests compare, each made once."""
    return parity_runs.Runs(checkpoints, tmp_path_factory.mktemp("runs"), embedded_run)
