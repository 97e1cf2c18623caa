"""Generation with the notebook's KV cache: same tokens as recomputing, and as transformers'
generate."""

from __future__ import annotations

import json
import math

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


def check_batches(batches):
    assert batches["together"] == batches["alone"]
    if "together_past_the_end" in batches:  # some prompt ended: its row kept stepping
        assert batches["together_past_the_end"] == batches["alone_past_the_end"]
        assert all(len(tokens) == 12 for tokens in batches["together_past_the_end"])
    assert len({len(tokens) for tokens in batches["prompts"]}) >= 4  # lengths differ: padding
    assert min(len(tokens) for tokens in batches["prompts"]) == 1  # <|begin_of_text|> alone
    assert batches["finite"]
    assert batches["same_angles"]  # positions start at each prompt's first real token
    assert batches["cache_shape"] == batches["cache_sizes"]  # one row per prompt
    for where, difference in batches["logit_differences"].items():
        assert difference < 1e-5, f"{where}: logits moved by {difference:.2g} of the largest"


def test_a_batch_gives_each_prompt_its_own_tokens_and_logits(embedded):
    # In float32, with the cache: every prompt's tokens are the ones it gets alone, and
    # padding, of any length and any ids, moves no real token's logits beyond rounding.
    assert "together_past_the_end" in embedded["batches"]  # "42" ends after one token
    check_batches(embedded["batches"])


def test_a_batch_on_a_random_checkpoint(random_run):
    check_batches(random_run[2]["batches"])


def test_sampling_options(embedded):
    # top_k=1 leaves one candidate, so any temperature gives the greedy tokens; a seed makes
    # sampling repeatable.
    result = embedded["sampling"]
    assert result["top_1"] == result["greedy"]
    assert result["hot_a"] == result["hot_b"] != result["hot_c"]
    assert result["hot_a"] != result["greedy"][:12]
    assert result["short"] == result["greedy"][:3]
    assert 128001 not in result["greedy"]  # the end token stops generation and is not returned


def test_each_sampling_rule_keeps_exactly_the_right_tokens(embedded):
    # the hand-made distribution [0.1, 0.5, 0.05, 0.2, 0.15]: by rank, ids 1, 3, 4, 0, 2
    rules = embedded["sampling"]["rules"]
    assert rules["top_k_kept=2"] == [1, 3]
    assert rules["top_p_kept=0.69"] == [1, 3]  # 0.5 + 0.2 reaches 0.69
    assert rules["top_p_kept=0.71"] == [1, 3, 4]  # 0.7 does not reach 0.71
    assert rules["top_p_kept=1.0"] == [0, 1, 2, 3, 4]
    assert rules["top_p_kept=0.75, exact"] == [1, 3]  # 0.5 + 0.25 reaches 0.75: no more
    assert rules["min_p_kept=0.29"] == [1, 3, 4]  # at least 0.145
    assert rules["min_p_kept=0.31"] == [1, 3]  # at least 0.155


def test_sampled_frequencies_follow_the_kept_distribution(embedded):
    """5,000 seeded draws with top-k 4, top-p 0.8 and min-p 0.15 together: they keep ids 1,
    3 and 4, renormalized to 0.5, 0.2, 0.15 over 0.85. Each frequency within 5 standard
    errors, sqrt(q (1 - q) / n), of its share (at most 0.035): by chance a miss has odds under
    1 in 10^6, and the unfiltered shares (0.5, 0.2, 0.15) are 0.09, 0.035 and 0.026 away."""
    draws = embedded["sampling"]["draws"]
    n, counts = draws["n"], draws["counts"]
    expected = [0.0, 0.5 / 0.85, 0.0, 0.2 / 0.85, 0.15 / 0.85]
    for token, (count, share) in enumerate(zip(counts, expected, strict=True)):
        bound = 5 * math.sqrt(share * (1 - share) / n)
        assert abs(count / n - share) <= bound, (token, count / n, share)
    assert counts[0] == counts[2] == 0  # what no rule kept is never drawn


def test_a_vanishing_top_p_or_a_min_p_of_one_is_greedy(embedded):
    result = embedded["sampling"]
    assert result["top_p_tiny"] == result["min_p_one"] == result["greedy"][:8]


def test_streamed_text_is_the_decoded_text_and_stops_before_a_stop_string(embedded, tokenizer):
    for name, case in embedded["sampling"]["streams"].items():
        text, stops, pieces = case["text"], case["stops"], case["pieces"]
        found = [text.find(stop) for stop in stops if stop in text]
        expected = text[: min(found)] if found else text
        assert "".join(pieces) == case["returned"] == expected, name
        assert not any("\ufffd" in piece for piece in pieces), name  # never half a character
        assert len(pieces) > 1, name  # handed out as it came, not once at the end
    across = embedded["sampling"]["streams"]["stop across tokens"]
    assert len(tokenizer.encode("\n\nQ:")) >= 2  # the stop string spans tokens
    assert across["returned"] == "first answer"
    multibyte = embedded["sampling"]["streams"]["multibyte"]
    assert len(tokenizer.encode("🦙")) == 3  # so its first two tokens are not text yet
    assert len([piece for piece in multibyte["pieces"] if piece]) > 3  # text as it came
