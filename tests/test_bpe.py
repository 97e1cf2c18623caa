"""The notebook's own tokenizer — `bpe_merges`, `bpe_piece`, `bpe_encode`, `bpe_decode` —
equals Meta's and tiktoken's.

Two ways to run the notebook's functions, never a copy of them:
- the shared executed run of the notebook (tests/conftest.py; `bpe`, below)
  encodes the 1,349 strings of tests/tokenizer_parity_strings.json in its kernel, each cut
  to its first BPE_STRING_LIMIT characters (tests/support/notebook_values.py says why), and
  the sentences of tests/multilingual_sentences.py;
- for the whole vocabulary, the sentences and generated strings, the cells of the section
  "The tokenizer, from scratch" are read from the committed notebook and run here, in order,
  on the same inputs the setup gives them.

Every check is also run on the section with tiktoken's whole-piece rule taken out (the
merges alone, as the notebook had it before): it must fail there, or it proves nothing.
"""

from __future__ import annotations

import json
import unicodedata
from types import SimpleNamespace

import nbformat
import pytest
import regex
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tokenizer_setup
from plumbing.checkpoint_files import TokenizerSource
from plumbing.run_notebook import NOTEBOOK
from plumbing.run_settings import DEFAULT_PROMPT
from testbeds import diagram_data as drawn  # the facts the diagrams draw
from testbeds.notebook_kernel import KernelGlobals, in_kernel
from tests.multilingual_sentences import SENTENCES
from tests.support.notebook_values import (
    BPE_STRING_LIMIT,
    bpe_parity_strings,
    read_in_shared_run,
)

SECTION = [
    "bpe-file",
    "bpe-ranks",
    "bpe-split-code",
    "bpe-merge-code",
    "bpe-whole-code",
    "bpe-encode-code",
    "bpe-decode-code",
]
# The whole-piece rule as bpe_piece writes it; the mutation below takes it out.
WHOLE_PIECE_RULE = """    if piece.encode("utf-8") in ranks:
        return [ranks[piece.encode("utf-8")]]
"""
# Measured over Meta's tokenizer.model: ranked tokens that are one whole piece under the split
# regex, and how many of them joining pairs in rank order alone never reaches.
WHOLE_PIECES = 126_648
MERGES_MISS = 588


@pytest.fixture(scope="module")
def kernel_results(embedded_run):
    """What `bpe` below saved in the shared embedded run."""
    return json.loads(embedded_run["files"]["bpe"].read_text(encoding="utf-8"))


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
    assert kernel_results["merges"] == drawn.BPE_STATES
    merged = [
        next(part for part in state if part not in previous)
        for previous, state in zip(drawn.BPE_STATES, drawn.BPE_STATES[1:], strict=False)
    ]
    ranks = [tokenizer.encode_single_token(part.encode()) for part in merged]
    assert ranks == drawn.BPE_MERGE_RANKS


def run_section(tokenizer, replacements=(), source=None):
    """The section's cells, run here on what the setup cell would give them (the vocabulary
    read from `source`, by default Llama 3's tokenizer.model), each (old, new) of
    `replacements` swapped into their source first."""
    cells = {cell.get("id"): cell for cell in nbformat.read(NOTEBOOK, as_version=4).cells}
    prompt = DEFAULT_PROMPT
    begin = tokenizer.begin_of_text
    if source is None:
        source = TokenizerSource("tokenizer.model", tokenizer_setup.find_tokenizer_model(None))
    namespace = {
        "checkpoint": SimpleNamespace(tokenizer_source=source),
        "tokenizer": tokenizer,
        "tokenizer_setup": tokenizer_setup,
        "begin": begin,
        "prompt": prompt,
    }
    namespace["prompt_tokens"] = begin + tokenizer.encode(prompt, disallowed_special=())
    exec("import base64\nimport regex\nfrom plumbing import tables", namespace)
    sources = {cell_id: cells[cell_id].source for cell_id in SECTION}
    for old, new in replacements:
        assert sum(source.count(old) for source in sources.values()) == 1, f"no {old!r}"
        sources = {cell_id: source.replace(old, new) for cell_id, source in sources.items()}
    for cell_id, source in sources.items():
        exec(compile(source, cell_id, "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def section(tokenizer):
    return run_section(tokenizer)


@pytest.fixture(scope="module")
def merges_only(tokenizer):
    """The section without the whole-piece rule: the notebook's tokenizer before it."""
    return run_section(tokenizer, [(WHOLE_PIECE_RULE, "")])


def test_the_whole_piece_diagram_shows_the_notebooks_functions(section, merges_only):
    merged = section["bpe_merges"](drawn.BPE_WHOLE_WORD)[-1]
    assert [part.decode() for part in merged] == drawn.BPE_WHOLE_MERGED
    assert [section["ranks"][part] for part in merged] == drawn.BPE_WHOLE_MERGED_RANKS
    assert section["bpe_piece"](drawn.BPE_WHOLE_WORD) == [drawn.BPE_WHOLE_RANK]
    assert merges_only["bpe_piece"](drawn.BPE_WHOLE_WORD) == drawn.BPE_WHOLE_MERGED_RANKS


def whole_piece_tokens(ranks, pattern=tokenizer_setup.SPLIT_PATTERN):
    """(text, rank) of every ranked token whose bytes are text that the split regex leaves
    as one piece: every token that text can be looked up as whole."""
    tokens = []
    for token, rank in ranks.items():
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError:
            continue  # part of a character: never a piece of text
        if regex.findall(pattern, text) == [text]:
            tokens.append((text, rank))
    return tokens


def vocabulary_misses(namespace):
    """The whole-piece tokens that the section's bpe_encode does not give as themselves."""
    encode = namespace["bpe_encode"]
    tokens = whole_piece_tokens(namespace["ranks"])
    assert len(tokens) == WHOLE_PIECES
    return [(text, rank) for text, rank in tokens if encode(text)[1:] != [rank]]


def test_every_whole_piece_token_encodes_to_itself(section):
    misses = vocabulary_misses(section)
    assert not misses, f"{len(misses)} tokens of the vocabulary encode otherwise: {misses[:5]}"


@pytest.mark.slow  # the whole vocabulary again, merges only (seconds)
def test_without_the_whole_piece_rule_the_vocabulary_test_fails(merges_only):
    misses = vocabulary_misses(merges_only)
    assert len(misses) == MERGES_MISS  # all between tiktoken's 100,000 and 128,000
    assert min(rank for _, rank in misses) >= 100_000
    assert (" например", 111797) in misses


def sentence_differences(namespace, meta):
    return [
        (language, sentence)
        for language, group in SENTENCES.items()
        for sentence in group
        if namespace["bpe_encode"](sentence) != meta.encode(sentence, bos=True, eos=False)
    ]


def test_sentences_in_many_languages_encode_like_meta(section, tokenizer, meta):
    required = ["Russian", "Ukrainian", "Turkish", "Vietnamese", "Czech", "Persian", "Hindi"]
    required += ["Greek", "Korean", "Chinese"]
    assert set(required) <= set(SENTENCES) and len(SENTENCES) >= 10
    assert not sentence_differences(section, meta)
    for group in SENTENCES.values():
        for sentence in group:
            ids = tokenizer.encode(sentence, disallowed_special=())
            assert ids == meta.encode(sentence, bos=False, eos=False)
            assert section["bpe_decode"](ids) == sentence


def test_the_sentences_need_the_whole_piece_rule(section, merges_only, meta):
    # the languages that have words among the tokens merges alone never reach use some
    needing = {"Russian", "Ukrainian", "Turkish", "Vietnamese", "Czech", "Persian", "Korean"}
    needing |= {"Chinese", "English"}
    failing = {language for language, _ in sentence_differences(merges_only, meta)}
    assert needing <= failing, f"no word that needs the rule in: {needing - failing}"


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
@example(text="\U00012550/A")  # found 2026-12-06: a character newer than tiktoken's tables
def test_generated_strings_encode_like_meta_and_tiktoken(section, tokenizer, meta, text):
    ours = section["bpe_encode"](text)
    assert ours == meta.encode(text, bos=True, eos=False)
    assert ours[1:] == tokenizer.encode(text, disallowed_special=())
    assert section["bpe_decode"](ours[1:]) == text


def newer_characters(tokenizer) -> list[str]:
    """Every character that `regex` puts in a class of the tokenizer's split pattern (letters,
    numbers; Llama 4's: capitals, lower case, marks) while Python's `unicodedata` has it
    unassigned: where the two packages' Unicode tables can disagree (split_regex)."""
    classes = sorted(set(regex.findall(r"\\p\{(\w+)\}", tokenizer._pat_str)))
    any_class = "[" + "".join(rf"\p{{{name}}}" for name in classes) + "]"
    every_character = "".join(map(chr, [*range(0xD800), *range(0xE000, 0x110000)]))
    return [c for c in regex.findall(any_class, every_character) if unicodedata.category(c) == "Cn"]


def newer_character_misses(namespace, meta) -> list[str]:
    """The newer characters (above) that, in the places each class matters (alone before a
    word, inside and after a lower-case word, after a capital, between digits, before a
    contraction), `bpe_encode` splits otherwise than Meta's tokenizer (tiktoken's tables)."""
    misses = []
    for c in newer_characters(namespace["tokenizer"]):
        text = f"{c}/A a{c}b A{c} 1{c}2 x{c}'s"
        if namespace["bpe_encode"](text) != meta.encode(text, bos=True, eos=False):
            misses.append(c)
    return misses


def test_every_character_newer_than_pythons_tables_splits_as_tiktoken_does(section, meta):
    misses = newer_character_misses(section, meta)
    assert not misses, f"{len(misses)} characters, e.g. {[hex(ord(c)) for c in misses[:5]]}"


token_ids = st.one_of(st.integers(0, 99_999), st.integers(100_000, 127_999))


@settings(max_examples=500, deadline=None)
@given(ids=st.lists(token_ids, min_size=1, max_size=12))
def test_strings_joined_from_vocabulary_tokens_encode_like_tiktoken(section, tokenizer, ids):
    # any tokens, the 28,000 added ones as often as tiktoken's: their bytes, read as UTF-8
    text = b"".join(section["token_bytes"][token] for token in ids).decode(errors="replace")
    assert section["bpe_encode"](text)[1:] == tokenizer.encode(text, disallowed_special=())


# In the notebook's kernel, after its last cell (sent there as source:
# testbeds/notebook_kernel.py).


@in_kernel
def bpe(nb: KernelGlobals, strings: list[str], path: str) -> None:
    """The notebook's from-scratch tokenizer on every string of `strings`, and its merges."""
    encoded = [nb["bpe_encode"](text) for text in strings]
    merges = [[part.decode() for part in state] for state in nb["bpe_merges"](" ultimate")]
    result = {
        "encoded": encoded,
        "decoded": [nb["bpe_decode"](ids[1:]) for ids in encoded],
        "merges": merges,
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(result, file)


read_in_shared_run("embedded", bpe, bpe_parity_strings())
