"""Generation with the notebook's KV cache: same tokens as recomputing, and as transformers'
generate."""

from __future__ import annotations

import json
import math

import pytest
import torch

from plumbing import checkpoint_files
from plumbing.run_settings import DEFAULT_PROMPT
from testbeds.notebook_kernel import KernelGlobals, in_kernel
from tests.support import reference_models
from tests.support.notebook_values import read_in_shared_run
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
    """What `generations` and `sampling` below saved in the shared embedded run."""
    files = embedded_run["files"]
    result = json.loads(files["generations"].read_text())
    result["sampling"] = json.loads(files["sampling"].read_text())
    return result


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


# In the notebook's kernel, after its last cell (sent there as source:
# testbeds/notebook_kernel.py).


@in_kernel
def batches(nb: KernelGlobals) -> dict:
    """The notebook's batch of prompts against each prompt alone: `generate_batch` against
    `generate`, and `forward_batch` with padding of any length and content against `forward`."""
    tokenizer, begin = nb["tokenizer"], nb["begin"]
    texts = [nb["prompt"], "the sun rises", "", "once upon a time", "a", "the sun rises"]
    # an empty text is no prompt where nothing begins a text (Qwen3's vocabulary)
    prompts = [begin + tokenizer.encode(text, disallowed_special=()) for text in texts]
    prompts = [tokens for tokens in prompts if tokens]
    generate, generate_batch = nb["generate"], nb["generate_batch"]
    result = {
        "prompts": prompts,
        "together": generate_batch(prompts),
        "alone": [generate(tokens) for tokens in prompts],
    }
    if any(len(tokens) < 24 for tokens in result["alone"]):  # a prompt ended: step past it
        result["together_past_the_end"] = generate_batch(prompts, 12, stop_at_end=False)
        result["alone_past_the_end"] = [
            generate(tokens, max_new_tokens=12, stop_at_end=False) for tokens in prompts
        ]
    # One prompt at a time behind 0 to 40 columns of padding, of arbitrary ids, against
    # forward on the prompt alone: the largest logit difference, relative.
    device, forward, forward_batch = nb["device"], nb["forward"], nb["forward_batch"]
    differences, finite = {}, True
    for tokens in prompts[:2]:
        alone = forward(tokens).float()
        for n_padding in (0, 1, 7, 40):
            padding_ids = torch.arange(n_padding, device=device) * 997 % nb["vocab_size"]
            row = torch.cat([padding_ids, torch.tensor(tokens, device=device)])[None]
            logits = forward_batch(row, torch.tensor([n_padding], device=device))[0].float()
            finite = finite and bool(logits.isfinite().all())
            difference = float((logits - alone).abs().max() / alone.abs().max())
            key = f"{len(tokens)} tokens after {n_padding} padding"
            differences[key] = difference
    # the angles each real token turns by: its position as if alone, to the bit (with RoPE a
    # shift of all of a prompt's positions would change scores only by rounding, so the
    # logits alone could not tell)
    lesson_layer, angles = nb["transformer_layer"], []

    def transformer_layer(stream, layer, cos, sin, *rest):
        if layer == 0:
            angles.append(cos)
        return lesson_layer(stream, layer, cos, sin, *rest)

    nb["transformer_layer"] = transformer_layer
    try:
        tokens = prompts[1]
        forward(tokens)
        row = torch.tensor([[0] * 5 + tokens], device=device)
        forward_batch(row, torch.tensor([5], device=device))
    finally:
        nb["transformer_layer"] = lesson_layer
    alone_cos, batch_cos = angles
    result["same_angles"] = bool(torch.equal(batch_cos[0, 0, 5:], alone_cos))
    # all the prompts in one batch, each row against its prompt alone
    rows, n_padding = nb["left_padded"](prompts)
    logits = forward_batch(rows, n_padding).float()
    for row, tokens in enumerate(prompts):
        alone = forward(tokens).float()
        differences[f"row {row} of the batch"] = float(
            (logits[row] - alone).abs().max() / alone.abs().max()
        )
    result["logit_differences"] = differences
    result["finite"] = finite and bool(logits.isfinite().all())
    cache = nb["KVCache"](9, prompts=len(prompts))
    result["cache_shape"] = list(cache.keys.shape)
    result["cache_sizes"] = [nb["n_layers"], len(prompts), nb["n_kv_heads"], 9, nb["head_dim"]]
    return result


@in_kernel(uses=(batches,))
def generations(nb: KernelGlobals, path: str) -> None:
    """The notebook's `generate` with and without the cache, on three prompts."""
    texts = [nb["prompt"], "the sun rises", "once upon a time"]
    prompts = {
        text: nb["begin"] + nb["tokenizer"].encode(text, disallowed_special=()) for text in texts
    }
    generate = nb["generate"]
    result = {
        "cached": {text: generate(tokens) for text, tokens in prompts.items()},
        "recomputed": {text: generate(tokens, use_cache=False) for text, tokens in prompts.items()},
        "batches": batches(nb),
    }
    with open(path, "w") as file:
        json.dump(result, file)


@in_kernel
def streams(nb: KernelGlobals) -> dict:
    """The notebook's `stream_text` on fixed token sequences: `generate` is replaced by a stand-in
    that hands out the tokens of a given text one at a time, as the model would."""
    tokenizer = nb["tokenizer"]
    cases = {
        "multibyte": ("naïve café, 🦙 and 42°C\nnext", ()),
        "stop across tokens": ("first answer\n\nQ: a second question", ("\n\nQ:",)),
        "stop never met": ("a line\nand a 🦙", ("\n\nQ:", "STOP")),
        "two stops": ("one. two! three", ("!", ". ")),
    }
    results = {}
    for name, (text, stops) in cases.items():
        tokens = tokenizer.encode(text)

        def stand_in(prompt_tokens, on_token=None, tokens=tokens, **options):
            handed = []
            for token in tokens:
                handed.append(token)
                if on_token(token):
                    break
            return handed

        pieces = []
        saved, nb["generate"] = nb["generate"], stand_in
        try:
            returned = nb["stream_text"]("prompt", stop_strings=stops, show=pieces.append)
        finally:
            nb["generate"] = saved
        results[name] = {
            "text": text,
            "stops": list(stops),
            "tokens": len(tokens),
            "pieces": pieces,
            "returned": returned,
        }
    return results


@in_kernel(uses=(streams,))
def sampling(nb: KernelGlobals, path: str) -> None:
    """The notebook's `generate` with its sampling options, on one prompt."""
    generate = nb["generate"]
    tokens = nb["begin"] + nb["tokenizer"].encode("once upon a time", disallowed_special=())
    result = {
        "greedy": generate(tokens),
        "top_1": generate(tokens, temperature=0.7, top_k=1),
        "hot_a": generate(tokens, temperature=3.0, seed=5, max_new_tokens=12),
        "hot_b": generate(tokens, temperature=3.0, seed=5, max_new_tokens=12),
        "hot_c": generate(tokens, temperature=3.0, seed=6, max_new_tokens=12),
        "short": generate(tokens, max_new_tokens=3),
        "top_p_tiny": generate(tokens, temperature=1.0, top_p=1e-6, max_new_tokens=8),
        "min_p_one": generate(tokens, temperature=1.0, min_p=1.0, max_new_tokens=8),
    }
    # the rules on a hand-made distribution, in a shuffled order
    shuffled = [0.1, 0.5, 0.05, 0.2, 0.15]
    probabilities = torch.tensor(shuffled)
    result["rules"] = {
        f"{name}={setting}": torch.nonzero(nb[name](probabilities, setting))[:, 0].tolist()
        for name, setting in [
            ("top_k_kept", 2),
            ("top_p_kept", 0.69),
            ("top_p_kept", 0.71),
            ("top_p_kept", 1.0),
            ("min_p_kept", 0.29),
            ("min_p_kept", 0.31),
        ]
    }
    exact = torch.tensor([0.125, 0.5, 0.125, 0.25])  # sums without rounding: 0.5 + 0.25 = 0.75
    result["rules"]["top_p_kept=0.75, exact"] = torch.nonzero(nb["top_p_kept"](exact, 0.75))[
        :, 0
    ].tolist()
    # many draws through pick_next, with every rule at once
    draws, generator = 5000, torch.Generator().manual_seed(0)
    logits = torch.log(probabilities)
    picks = [
        nb["pick_next"](logits, 1.0, 4, generator, top_p=0.8, min_p=0.15) for _ in range(draws)
    ]
    result["draws"] = {
        "n": draws,
        "counts": torch.bincount(torch.tensor(picks), minlength=5).tolist(),
    }
    result["streams"] = streams(nb)
    with open(path, "w") as file:
        json.dump(result, file)


read_in_shared_run("embedded", generations)
read_in_shared_run("embedded", sampling)
read_in_shared_run(GENERATING, generations)
