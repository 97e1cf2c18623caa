"""The notebook runs end to end on any prompt a reader gives it, not only the Hitchhiker's.

Each prompt below once stopped a cell: the empty one `bugs-measure-every` (a forward pass over
no tokens) and, in bfloat16, `candidates-code` (two logits tied); one character, an emoji or
a Russian word `bugs-scaling-code` (the last query of a token the embedded model never saw is
zero); Russian `bpe-encode-code` (a word of the vocabulary that merges alone never reach); a
spelled special token `learn-teach-code`. Each runs the whole notebook, the demos included,
in a kernel of its own; the stored outputs are not compared (they are the default prompt's).
The three kernels run at once, one thread each, as tests/test_stored_outputs.py does.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest

from plumbing.run_notebook import NOTEBOOK, execute
from tests.support.notebook_values import cell_text

pytestmark = pytest.mark.slow

ONE_THREAD = {"OMP_NUM_THREADS": "1", "LLAMA3_DEVICE": "cpu"}
PROMPTS = {
    # the tie: in bfloat16 the embedded model's two best first tokens share one logit
    "empty": ("", {"LLAMA3_DTYPE": "bfloat16"}),
    "one character": ("x", {"LLAMA3_DTYPE": "float32"}),
    "every kind": (
        "<|eot_id|> например, столица Федерации 日本語の文章 🦙🦙\n\nline two\r\n\t",
        {"LLAMA3_DTYPE": "float32"},
    ),
}


def run_with_prompt(prompt: str, settings: dict[str, str]):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    execute(notebook, {**ONE_THREAD, **settings, "LLAMA3_PROMPT": prompt}, timeout=600)
    return notebook


@pytest.fixture(scope="module")
def executed():
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        futures = {name: pool.submit(run_with_prompt, *case) for name, case in PROMPTS.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", PROMPTS)
def test_the_notebook_runs_to_the_end_and_names_a_next_token(executed, name, meta):
    notebook, (prompt, _) = executed[name], PROMPTS[name]
    answer = re.fullmatch(
        r"next token id: (\d+)\ndecoded: (.*)\n", cell_text(notebook, "answer-code")
    )
    assert answer, "the answer cell printed no next token"
    printed = cell_text(notebook, "tokens-encode")
    ids = meta.encode(prompt, bos=True, eos=False)  # Meta's tokenizer: the same tokens
    assert printed == f"{len(ids)} tokens: {ids[:24]}\n"
    assert cell_text(notebook, "bpe-encode-code") == f"{ids[:24]}\n"  # the notebook's own BPE
    last = next(cell for cell in reversed(notebook.cells) if cell.cell_type == "code")
    assert last.get("execution_count"), "the last code cell did not run"


def test_a_demo_that_needs_more_than_the_prompt_says_why(executed):
    printed = cell_text(executed["empty"], "bugs-measure-every")
    assert "no row without <|begin_of_text|>: the empty prompt has no other token" in printed
    assert "(none)" in printed  # and the rest of the table is there
