"""The notebook's own tokenizer — `bpe_merges`, `bpe_encode`, `bpe_decode` — equals Meta's and
tiktoken's.

Two ways to run the notebook's functions, never a copy of them:
- the shared executed run of the notebook (tests/conftest.py, tests/support/in_kernel.bpe)
  encodes the 1,349 strings of tests/tokenizer_parity_strings.json in its kernel, each cut
  to its first BPE_STRING_LIMIT characters (tests/support/notebook_values.py says why);
- for generated strings, the cells of the section "The tokenizer, from scratch" are read
  from the committed notebook and run here, in order, on the same inputs the setup gives them.
"""

from __future__ import annotations

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenizer_setup
from generators.diagram_data import BPE_MERGE_RANKS, BPE_STATES
from plumbing.run_notebook import NOTEBOOK
from plumbing.run_settings import DEFAULT_PROMPT
from tests.support.notebook_values import BPE_STRING_LIMIT, bpe_parity_strings

SECTION = [
    "bpe-file",
    "bpe-ranks",
    "bpe-split-code",
    "bpe-merge-code",
    "bpe-encode-code",
    "bpe-decode-code",
]


@pytest.fixture(scope="module")
def kernel_results(embedded_run):
    return embedded_run["bpe"]


@pytest.mark.slow
def test_executed_notebook_encodes_like_meta_on_every_string(kernel_results, meta):
    bos = meta.special_tokens["<|begin_of_text|>"]
    strings = bpe_parity_strings()
    assert max(map(len, strings)) == BPE_STRING_LIMIT  # the long runs are there, cut
    wrong = [
        text
        for text, ids in zip(strings, kernel_results["encoded"], strict=True)
        if ids != meta.encode(text, bos=True, eos=False)
    ]
    assert not wrong, f"{len(wrong)} of {len(strings)} strings differ, e.g. {wrong[:3]!r}"
    assert all(ids[0] == bos for ids in kernel_results["encoded"])
    unrounded = [
        text
        for text, decoded in zip(strings, kernel_results["decoded"], strict=True)
        if decoded != text
    ]
    assert not unrounded, f"bpe_decode(bpe_encode(s)) != s for {unrounded[:3]!r}"


@pytest.mark.slow
def test_the_diagram_shows_the_notebooks_merges(kernel_results, tokenizer):
    assert kernel_results["merges"] == BPE_STATES
    merged = [
        next(part for part in state if part not in previous)
        for previous, state in zip(BPE_STATES, BPE_STATES[1:], strict=False)
    ]
    assert [tokenizer.encode_single_token(part.encode()) for part in merged] == BPE_MERGE_RANKS


@pytest.fixture(scope="module")
def section(tokenizer):
    """The section's cells, run here on what the setup cell would give them."""
    cells = {cell.get("id"): cell for cell in nbformat.read(NOTEBOOK, as_version=4).cells}
    prompt = DEFAULT_PROMPT
    bos_id = tokenizer.encode_single_token("<|begin_of_text|>")
    namespace = {
        "checkpoint_dir": None,
        "tokenizer": tokenizer,
        "tokenizer_setup": tokenizer_setup,
        "bos_id": bos_id,
        "prompt": prompt,
    }
    namespace["prompt_tokens"] = [bos_id] + tokenizer.encode(prompt, disallowed_special=())
    exec("import base64\nimport regex", namespace)
    for cell_id in SECTION:
        exec(compile(cells[cell_id].source, cell_id, "exec"), namespace)
    return namespace


SCRIPTS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "的一是不了人我在有他这中大来上国个到说们东京",
    "ひらがなカタカナ",
    "한국어텍스트",
    "العربيةنص",
    "עברית",
    "हिन्दी",
    "ไทย",
    "русскийтекст",
    "ελληνικά",
    "éèêëçñøåßœ\u0301\u0308",
    "🦙😀👍🏽🇫🇷\u200d❤️🧑‍💻",
    " \t\n\r\u00a0\u3000",
    "0123456789",
    "()[]{}<>=+-*/%&|^~!?.,:;'\"`@#$_\\",
]
characters = st.sampled_from(sorted({char for script in SCRIPTS for char in script}))
mixed_text = st.text(alphabet=characters, max_size=120)
code_text = st.lists(
    st.sampled_from(
        [
            "def ",
            "f(x)",
            " return",
            "  ",
            "\n",
            "\t",
            "x = 42",
            "# é",
            "if",
            " 1000000",
            "'s",
            "'LL",
        ]
    ),
    max_size=20,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=150), mixed_text, code_text))
def test_generated_strings_encode_like_meta_and_tiktoken(section, tokenizer, meta, text):
    ours = section["bpe_encode"](text)
    assert ours == meta.encode(text, bos=True, eos=False)
    assert ours[1:] == tokenizer.encode(text, disallowed_special=())
    assert section["bpe_decode"](ours[1:]) == text
