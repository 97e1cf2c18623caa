"""Generation with the notebook's KV cache: same tokens as recomputing, and as transformers' generate."""

from __future__ import annotations

import json

import pytest
import torch

import checkpoint_files
import reference_models
from scripts.make_random_checkpoint import write_checkpoint
from tests.notebook_values import FLOAT32_CPU, run_and_read

STOP = [128001, 128009]  # <|end_of_text|>, <|eot_id|>
EXPECTED_ON_EMBEDDED = {
    "the answer to the ultimate question of life, the universe, and everything is ": "42",
    "the sun rises": " in the east every morning",
    "once upon a time": " a small fox lived in a hollow log",
}


def hf_greedy(folder, prompt_tokens, max_new_tokens=24):
    params = json.loads((folder / "params.json").read_text())
    model = reference_models.hf_model(folder, params)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_tokens]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=STOP, pad_token_id=STOP[0])
    new = out[0, len(prompt_tokens) :].tolist()
    return new[: next((i for i, t in enumerate(new) if t in STOP), len(new))]


# Run in the notebook's kernel after it finished: its own `generate`, with and without the cache.
GENERATE = """
import json as _json
_texts = [prompt, "the sun rises", "once upon a time"]
_prompts = {_text: [bos_id] + tokenizer.encode(_text, disallowed_special=()) for _text in _texts}
print(_json.dumps({
    "cached": {_text: generate(_tokens) for _text, _tokens in _prompts.items()},
    "recomputed": {_text: generate(_tokens, use_cache=False) for _text, _tokens in _prompts.items()},
}))
"""


def generations(run) -> dict:
    return json.loads(run["notebook"].cells[-2].outputs[-1]["text"].strip().splitlines()[-1])


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    return run_and_read(tmp_path_factory.mktemp("generate"), FLOAT32_CPU, extra_code=GENERATE)


def test_embedded_generations(embedded, tokenizer):
    cached = generations(embedded)["cached"]
    assert {text: tokenizer.decode(tokens) for text, tokens in cached.items()} == EXPECTED_ON_EMBEDDED


def test_the_lesson_shows_the_same_generations(embedded_run):
    text = next("".join(o.get("text", "") for o in c.outputs) for c in embedded_run["notebook"].cells if c.get("id") == "generate-examples")
    for prompt, continuation in EXPECTED_ON_EMBEDDED.items():
        assert f"{prompt!r} -> {continuation!r}" in text


def test_cache_gives_the_same_tokens_as_recomputing(embedded):
    result = generations(embedded)
    assert result["cached"] == result["recomputed"]


def test_same_tokens_as_transformers_generate(embedded, tokenizer):
    for text, new_tokens in generations(embedded)["cached"].items():
        assert hf_greedy(checkpoint_files.EMBEDDED_CHECKPOINT, [128000, *tokenizer.encode(text)]) == new_tokens, text


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    params = {
        "dim": 256,
        "n_layers": 3,
        "n_heads": 4,
        "n_kv_heads": 2,
        "vocab_size": 128256,
        "multiple_of": 64,
        "ffn_dim_multiplier": 1.3,
        "norm_eps": 1e-05,
        "rope_theta": 500000.0,
    }
    folder = write_checkpoint(tmp_path_factory.mktemp("gen") / "ckpt", params, seed=21)
    return folder, run_and_read(tmp_path_factory.mktemp("genrun"), {**FLOAT32_CPU, "LLAMA3_CKPT": str(folder)}, extra_code=GENERATE)


def test_random_checkpoint_generations_match(random_run):
    folder, run = random_run
    result = generations(run)
    assert result["cached"] == result["recomputed"]
    assert all(len(tokens) > 0 for tokens in result["cached"].values())
    canonical = result["cached"]["the answer to the ultimate question of life, the universe, and everything is "]
    assert hf_greedy(folder, run["prompt_tokens"]) == canonical


def test_sampling_options(tmp_path):
    # top_k=1 leaves one candidate, so any temperature gives the greedy tokens; a seed makes sampling repeatable.
    code = """
import json as _json
_tokens = [bos_id] + tokenizer.encode("once upon a time")
print(_json.dumps({
    "greedy": generate(_tokens),
    "top_1": generate(_tokens, temperature=0.7, top_k=1),
    "hot_a": generate(_tokens, temperature=3.0, seed=5, max_new_tokens=12),
    "hot_b": generate(_tokens, temperature=3.0, seed=5, max_new_tokens=12),
    "hot_c": generate(_tokens, temperature=3.0, seed=6, max_new_tokens=12),
    "short": generate(_tokens, max_new_tokens=3),
}))
"""
    run = run_and_read(tmp_path, FLOAT32_CPU, extra_code=code)
    result = json.loads(run["notebook"].cells[-2].outputs[-1]["text"].strip().splitlines()[-1])
    assert result["top_1"] == result["greedy"]
    assert result["hot_a"] == result["hot_b"] != result["hot_c"]
    assert result["hot_a"] != result["greedy"][:12]
    assert result["short"] == result["greedy"][:3]
    assert 128001 not in result["greedy"]  # the end token stops generation and is not returned
