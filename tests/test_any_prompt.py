"""The notebook runs end to end on any prompt a reader gives it, not only the Hitchhiker's.

Each prompt below once stopped a cell: the empty one `bugs-measure-every` (a forward pass over
no tokens) and, in bfloat16, `candidates-code` (two logits tied); one character, an emoji or
a Russian word `bugs-scaling-code` (the last query of a token the embedded model never saw is
zero); Russian `bpe-encode-code` (a word of the vocabulary that merges alone never reach); a
spelled special token `learn-teach-code`. The last prompt is longer than 64 tokens, where the
batch of prompts leaves the reader's out (padded to it, every row would grow). Each runs the
whole notebook, the demos included,
in a kernel of its own; the stored outputs are not compared (they are the default prompt's).
The three run beside the rest of the suite, one thread each (tests/support/shared_runs.py).
"""

from __future__ import annotations

import re

import pytest

from tests.support.notebook_values import cell_text
from tests.support.shared_runs import PROMPTS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", PROMPTS)
def test_the_notebook_runs_to_the_end_and_names_a_next_token(any_prompt_runs, name, meta):
    notebook, (prompt, _) = any_prompt_runs[name], PROMPTS[name]
    answer = re.fullmatch(
        r"next token id: (\d+)\ndecoded: (.*)\n", cell_text(notebook, "answer-code")
    )
    assert answer, "the answer cell printed no next token"
    printed = cell_text(notebook, "tokens-encode")
    ids = meta.encode(prompt, bos=True, eos=False)  # Meta's tokenizer: the same tokens
    assert printed.startswith(f"{len(ids)} tokens: {ids[:24]}\n")  # then their labels
    assert cell_text(notebook, "bpe-encode-code") == f"{ids[:24]}\n"  # the notebook's own BPE
    last = next(cell for cell in reversed(notebook.cells) if cell.cell_type == "code")
    assert last.get("execution_count"), "the last code cell did not run"


@pytest.mark.parametrize("name", PROMPTS)
def test_the_batch_holds_the_readers_prompt_only_when_short(any_prompt_runs, name, meta):
    # a long prompt would pad every row of the batch to its own length (time and memory)
    printed = cell_text(any_prompt_runs[name], "batch-pad-code")
    short = len(meta.encode(PROMPTS[name][0], bos=True, eos=False)) <= 64
    assert printed.startswith(f"batch_rows: [{3 if short else 2} batch × ")
    assert printed.count("columns of padding, then") == (3 if short else 2)


def test_a_demo_that_needs_more_than_the_prompt_says_why(any_prompt_runs):
    printed = cell_text(any_prompt_runs["empty"], "bugs-measure-every")
    assert "no row without <|begin_of_text|>: the empty prompt has no other token" in printed
    assert "(none)" in printed  # and the rest of the table is there
