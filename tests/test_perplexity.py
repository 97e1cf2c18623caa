"""The learning section's `perplexity` and the held-out text it reads.

Perplexity is e^(mean −log p(next token)) over every predicted position. transformers'
`LlamaForCausalLM` gives the mean loss of a sequence from `labels`; the sequences are combined
by their number of predicted positions, as one mean over all of them. Longer sequences are read
in windows the standard way (Hugging Face's "Perplexity of fixed-length models"): each window
scores only the positions no window before it scored, its other labels set to -100.

The notebook's side comes from its own kernel (`perplexities`, below),
on the embedded model and on a random checkpoint (tests/support/parity_runs.py: SCORING).
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from plumbing import REPO_DIR
from testbeds.notebook_kernel import KernelGlobals, in_kernel
from tests.support.notebook_values import read_in_shared_run
from tests.support.parity_runs import SCORING

CORPUS = REPO_DIR / "generators" / "corpus.txt"
HELDOUT = REPO_DIR / "generators" / "heldout.txt"
# relative: float32 against float32, both summing the same losses in a different order
TOLERANCE = 1e-4
# the kernel's scores: the sequences, and (window, stride) as the notebook read them (None:
# one window each)
CASES = {
    "heldout": ("heldout", None),
    "12 heldout, window 6, stride 4": ("12 heldout", (6, 4)),
    "long": ("long", None),
    "long, window 32, stride 16": ("long", (32, 16)),
    "long, window 32, stride 20": ("long", (32, 20)),
}


def normalized(line: str) -> str:
    """A sentence as compared: lowercase, words only, single spaces."""
    return " ".join(re.findall(r"[a-z0-9]+", line.lower()))


def sentences(path) -> list[str]:
    return [normalized(line) for line in path.read_text().splitlines() if line.strip()]


def test_heldout_text_is_not_the_training_corpus():
    heldout, corpus = sentences(HELDOUT), set(sentences(CORPUS))
    assert len(heldout) >= 50, f"{HELDOUT.name} holds {len(heldout)} sentences"
    assert len(set(heldout)) == len(heldout), "a held-out sentence is repeated"
    seen = [sentence for sentence in heldout if sentence in corpus]
    assert not seen, f"{HELDOUT.name} repeats the training corpus: {seen}"


def transformers_perplexity(model, sequences, window=None, stride=None) -> float:
    """e^(mean loss over every scored position), the losses from `LlamaForCausalLM(labels=…)`."""
    total, count = 0.0, 0
    for tokens in sequences:
        ids = torch.tensor([tokens])
        size, step = (len(tokens), len(tokens)) if window is None else (window, stride)
        scored_until = 0  # the standard loop: positions before it were scored by earlier windows
        for begin in range(0, len(tokens), step):
            end = min(begin + size, len(tokens))
            labels = ids[:, begin:end].clone()
            labels[:, : -(end - scored_until)] = -100
            predicted = int((labels[:, 1:] != -100).sum())  # the model shifts labels by one
            with torch.no_grad():
                loss = model(ids[:, begin:end], labels=labels, use_cache=False).loss
            total += float(loss) * predicted
            count += predicted
            scored_until = end
            if end == len(tokens):
                break
    return math.exp(total / count)


@pytest.fixture(scope="module")
def scored(runs):
    """Each checkpoint's kernel figures (`perplexities`, below)."""
    return {
        checkpoint: json.loads(
            runs.notebook(checkpoint, "canonical-17")["files"]["perplexities"].read_text()
        )
        for checkpoint in ("embedded", SCORING)
    }


@pytest.mark.slow
def test_the_notebook_reads_the_heldout_file(scored, tokenizer):
    figures = scored["embedded"]
    assert figures["heldout_lines"] == HELDOUT.read_text().splitlines()
    bos, end = tokenizer.encode_single_token("<|begin_of_text|>"), figures["end_of_text_id"]
    assert end == tokenizer.encode_single_token("<|end_of_text|>")
    expected = [[bos, *tokenizer.encode(line), end] for line in figures["heldout_lines"]]
    assert figures["heldout"] == expected
    assert len(figures["long"]) == 100
    # the section's printed figure is the function's; trained on the corpus, the embedded model
    # finds the held-out sentences more predictable than a guess among its 128,256 tokens,
    # though far less than its training sentences (about 1.9)
    assert figures["heldout_score"] == pytest.approx(figures["scores"]["heldout"], rel=1e-6)
    assert 2 < figures["heldout_score"] < 128_256 / 10
    assert scored[SCORING]["heldout_score"] is None  # the demos are skipped there


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("checkpoint", ["embedded", SCORING])
def test_perplexity_equals_transformers(scored, runs, checkpoint, case):
    figures = scored[checkpoint]
    which, windows = CASES[case]
    sequences = {
        "heldout": figures["heldout"],
        "12 heldout": figures["heldout"][:12],
        "long": [figures["long"]],
    }[which]
    if windows is not None:  # the case reads every sequence in more than one window
        assert all(len(tokens) > windows[0] for tokens in sequences)
    theirs = transformers_perplexity(runs.model("hf", checkpoint), sequences, *(windows or ()))
    ours = figures["scores"][case]
    difference = abs(ours - theirs) / theirs
    assert difference <= TOLERANCE, f"ours {ours:.6g}, transformers' {theirs:.6g}: {difference:.1e}"


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", ["embedded", SCORING])
def test_windows_see_less_context(scored, checkpoint):
    # a window forgets what came before it, so the windowed figure differs from the whole
    # sequence's: the cases above test the windows, not the same number twice
    scores = scored[checkpoint]["scores"]
    assert scores["long, window 32, stride 16"] != pytest.approx(scores["long"], rel=1e-3)
    assert scores["long, window 32, stride 20"] != pytest.approx(scores["long"], rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", ["embedded", SCORING])
def test_windows_that_do_not_overlap_are_refused(scored, checkpoint):
    # a window that starts where the last one ended has no context for its first target, which
    # `perplexity` would then leave out of the mean (one of every 32 here, silently)
    assert scored[checkpoint]["refused"] == {"32, 32": "refused", "32, 40": "refused"}


# In the notebook's kernel, after its last cell (sent there as source:
# testbeds/notebook_kernel.py).


@in_kernel
def perplexities(nb: KernelGlobals, path: str) -> None:
    """The learning section's `perplexity` on its held-out sentences, without windows and with
    windows shorter than the sequences, and the token ids it read, so that a test can score the
    same ids with transformers.

    With windows: the first 12 held-out sentences read 6 tokens at a time moving by 4 (each
    sentence needs several windows), and one 100-token sequence (the sentences one after
    another) read 32 at a time moving by 16, and by 20; and what it says to windows that do not
    overlap."""
    perplexity, heldout = nb["perplexity"], nb["heldout"]
    long = [token for sentence in heldout for token in sentence][:100]
    result = {
        "heldout": heldout,
        "heldout_lines": nb["heldout_lines"],
        "end_of_text_id": nb["end_of_text_id"],
        "heldout_score": nb["heldout_score"],  # what the cell printed (None: demos skipped)
        "long": long,
        "scores": {
            "heldout": perplexity(heldout),
            "12 heldout, window 6, stride 4": perplexity(heldout[:12], window=6, stride=4),
            "long": perplexity([long]),
            "long, window 32, stride 16": perplexity([long], window=32, stride=16),
            "long, window 32, stride 20": perplexity([long], window=32, stride=20),
        },
        "refused": {},  # (window, stride) that would lose positions: refused, or the score
    }
    for window, stride in [(32, 32), (32, 40)]:  # windows that meet, or leave a gap, lose one
        try:
            result["refused"][f"{window}, {stride}"] = perplexity([long], window, stride)
        except AssertionError:
            result["refused"][f"{window}, {stride}"] = "refused"
    with open(path, "w") as file:
        json.dump(result, file)


read_in_shared_run("embedded", perplexities)
read_in_shared_run(SCORING, perplexities)
