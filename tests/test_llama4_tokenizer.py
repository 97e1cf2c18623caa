"""Llama 4's tokenizer (issue #45): Meta's tokenizer.model of 200,000 ranked tokens, read by
`tokenizer_setup` as it reads Llama 3's, equals Meta's own `llama4` tokenizer, and the
notebook's tokenizer from scratch (its section "The tokenizer, from scratch", run here on
Llama 4's vocabulary, as tests/test_bpe.py runs it on Llama 3's) equals both.

- Every special token, its id, the split pattern and the chat format are Meta's.
- Every ranked token that is text and one whole piece under the split pattern (198,165 of
  them) encodes to itself through `bpe_encode`. (Measured once, not tested each run: unlike
  Llama 3's, Llama 4's vocabulary needs no whole-piece rule; joining pairs in rank order alone
  reaches every one of those tokens.)
- The sentences of tests/multilingual_sentences.py and generated strings (every script the
  suite knows, code, any Unicode text, characters newer than tiktoken's tables) encode as
  Meta's tokenizer encodes them, through tiktoken and through `bpe_encode`, and decode back;
  cut by Llama 3's split pattern instead, the sentences do not.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from llama_models.llama4.tokenizer import Tokenizer as MetaTokenizer

import tokenizer_setup
from plumbing.checkpoint_files import TokenizerSource
from tests.multilingual_sentences import SENTENCES
from tests.test_bpe import (
    code_text,
    mixed_text,
    newer_character_misses,
    newer_characters,
    run_section,
    sentence_differences,
    whole_piece_tokens,
)

# The whole vocabulary and every newer character: `make test`, not the edit loop (`make quick`).
pytestmark = pytest.mark.slow

# Measured over Meta's Llama 4 tokenizer.model: the ranked tokens that are text and one
# whole piece under the split pattern (tiktoken's Unicode tables).
WHOLE_PIECES = 198_165


@pytest.fixture(scope="module")
def source():
    path = tokenizer_setup.packaged_tokenizer_model("llama4")
    assert path is not None, "llama-models (requirements.txt) ships Llama 4's tokenizer.model"
    return TokenizerSource("tokenizer.model", path)


@pytest.fixture(scope="module")
def tokenizer(source):
    return tokenizer_setup.load_tokenizer(source)


@pytest.fixture(scope="module")
def meta(source):
    return MetaTokenizer(source.path)


@pytest.fixture(scope="module")
def section(tokenizer, source):
    return run_section(tokenizer, source=source)


def test_the_vocabulary_its_special_tokens_and_pattern_are_metas(tokenizer, meta):
    assert tokenizer.n_vocab == meta.n_words == 202_048
    assert tokenizer._special_tokens == meta.special_tokens
    assert tokenizer._pat_str == meta.model._pat_str == tokenizer_setup.LLAMA4_SPLIT_PATTERN
    assert tokenizer.begin_of_text == [meta.bos_id] and tokenizer.end_of_text == meta.eos_id
    assert tokenizer.turn_end == meta.special_tokens["<|eot|>"]
    assert tokenizer.stop_tokens <= set(meta.stop_tokens)


def test_the_chat_format_is_metas(tokenizer, meta):
    # as Meta's llama4 ChatFormat lays out one user turn and the assistant's header (its module
    # imports torchvision for images, which this project does not install)
    question = "the answer to the ultimate question?"
    special = meta.special_tokens

    def header(role):
        return [special["<|header_start|>"], *meta.encode(role, bos=False, eos=False)] + [
            special["<|header_end|>"],
            *meta.encode("\n\n", bos=False, eos=False),
        ]

    theirs = [meta.bos_id, *header("user"), *meta.encode(question, bos=False, eos=False)]
    theirs += [special["<|eot|>"], *header("assistant")]
    ours = tokenizer.encode(
        tokenizer.chat_template.format(question=question), allowed_special="all"
    )
    assert ours == theirs


def vocabulary_misses(namespace, tokenizer):
    encode = namespace["bpe_encode"]
    tokens = whole_piece_tokens(namespace["ranks"], tokenizer_setup.split_regex(tokenizer))
    assert len(tokens) == WHOLE_PIECES
    return [(text, rank) for text, rank in tokens if encode(text)[1:] != [rank]]


def test_every_whole_piece_token_encodes_to_itself(section, tokenizer):
    assert len(section["ranks"]) == tokenizer_setup.LLAMA4_MERGEABLE_RANKS
    misses = vocabulary_misses(section, tokenizer)
    assert not misses, f"{len(misses)} tokens of the vocabulary encode otherwise: {misses[:5]}"


def test_with_llama3s_split_pattern_the_sentences_encode_otherwise(tokenizer, source, meta):
    # what the tests below would catch: Llama 4's ranks cut by Llama 3's pattern
    llama3_cut = tokenizer_setup.Tokenizer(
        name="llama4 ranks, llama3 pattern",
        pat_str=tokenizer_setup.SPLIT_PATTERN,
        mergeable_ranks=tokenizer._mergeable_ranks,
        special_tokens=tokenizer._special_tokens,
        **tokenizer_setup.LLAMA4_AROUND,
    )
    llama3_section = run_section(llama3_cut, source=source)
    differing = {language for language, _ in sentence_differences(llama3_section, meta)}
    assert {"Hindi", "Thai"} <= differing  # their vowel signs are marks: o200k keeps them in
    text = "it's"  # o200k: the contraction ends the word, one token
    assert llama3_section["bpe_encode"](text) != meta.encode(text, bos=True, eos=False)


def test_sentences_in_many_languages_encode_like_meta(section, tokenizer, meta):
    assert not sentence_differences(section, meta)
    for group in SENTENCES.values():
        for sentence in group:
            theirs = meta.encode(sentence, bos=True, eos=False)
            assert tokenizer.encode(sentence, disallowed_special=()) == theirs[1:], sentence
            assert section["bpe_decode"](theirs[1:]) == sentence


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=150), mixed_text, code_text))
@example(text="\U00012550/A")  # newer than tiktoken's tables: unassigned to it
@example(text="NAÏVE Éclair'S camelCase ÀBC\u0301d")  # capitals, then lower case, marks
def test_generated_strings_encode_like_meta_and_tiktoken(section, tokenizer, meta, text):
    ours = section["bpe_encode"](text)
    assert ours == meta.encode(text, bos=True, eos=False)
    assert ours[1:] == tokenizer.encode(text, disallowed_special=())
    assert section["bpe_decode"](ours[1:]) == text


def test_every_character_newer_than_pythons_tables_splits_as_tiktoken_does(section, meta):
    assert len(newer_characters(section["tokenizer"])) > 20_000  # marks and letters since 14.0
    misses = newer_character_misses(section, meta)
    assert not misses, f"{len(misses)} characters, e.g. {[hex(ord(c)) for c in misses[:5]]}"
