"""Generation with the notebook's KV cache: same tokens as recomputing, and as transformers'
generate."""

from __future__ import annotations

import json

import pytest
import torch

from plumbing import checkpoint_files
from plumbing.run_settings import DEFAULT_PROMPT
from tests.support import reference_models
from tests.support.parity_runs import GENERATING

pytestmark = pytest.mark.slow  # runs the notebook in kernels: `make quick` leaves it out

STOP = [128001, 128009]  # <|end_of_text|>, <|eot_id|>
EXPECTED_ON_EMBEDDED = {
    DEFAULT_PROMPT: "42",
    "the sun rises": " in the east every morning",
    "once upon a time": " a small fox lived in a hollow log",
}


def hf_greedy(folder, prompt_tokens, max_new_tokens=24):
    params = json.loads((folder / "params.json").read_text())
    model = reference_models.hf_model(folder, params)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_tokens]),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=STOP,
            pad_token_id=STOP[0],
        )
    new = out[0, len(prompt_tokens) :].tolist()
    return new[: next((i for i, t in enumerate(new) if t in STOP), len(new))]


@pytest.fixture(scope="module")
def embedded(embedded_run):
    return embedded_run["generations"]


def test_embedded_generations(embedded, tokenizer):
    cached = embedded["cached"]
    assert {
        text: tokenizer.decode(tokens) for text, tokens in cached.items()
    } == EXPECTED_ON_EMBEDDED


def test_the_lesson_shows_the_same_generations(embedded_run):
    text = next(
        "".join(o.get("text", "") for o in c.outputs)
        for c in embedded_run["notebook"].cells
        if c.get("id") == "generate-examples"
    )
    for prompt, continuation in EXPECTED_ON_EMBEDDED.items():
        assert f"{prompt!r} -> {continuation!r}" in text


def test_cache_gives_the_same_tokens_as_recomputing(embedded):
    result = embedded
    assert result["cached"] == result["recomputed"]


def test_same_tokens_as_transformers_generate(embedded, tokenizer):
    for text, new_tokens in embedded["cached"].items():
        assert (
            hf_greedy(checkpoint_files.EMBEDDED_CHECKPOINT, [128000, *tokenizer.encode(text)])
            == new_tokens
        ), text


@pytest.fixture(scope="module")
def random_run(runs, checkpoints):
    """A random checkpoint's run, which generates in its kernel (tests/support/parity_runs.py)."""
    run = runs.notebook(GENERATING, "canonical-17")
    return checkpoints[GENERATING], run, json.loads(run["files"]["generations"].read_text())


def test_random_checkpoint_generations_match(random_run):
    folder, run, result = random_run
    assert result["cached"] == result["recomputed"]
    assert all(len(tokens) > 0 for tokens in result["cached"].values())
    canonical = result["cached"][DEFAULT_PROMPT]
    assert hf_greedy(folder, run["prompt_tokens"]) == canonical


def test_sampling_options(embedded):
    # top_k=1 leaves one candidate, so any temperature gives the greedy tokens; a seed makes
    # sampling repeatable.
    result = embedded["sampling"]
    assert result["top_1"] == result["greedy"]
    assert result["hot_a"] == result["hot_b"] != result["hot_c"]
    assert result["hot_a"] != result["greedy"][:12]
    assert result["short"] == result["greedy"][:3]
    assert 128001 not in result["greedy"]  # the end token stops generation and is not returned
