"""tokenizer_setup builds exactly Meta's Llama 3 tokenizer."""

import json
from pathlib import Path

import pytest

import tokenizer_setup
from plumbing.checkpoint_files import TokenizerSource
from plumbing.run_settings import DEFAULT_PROMPT
from tests.support.notebook_values import CANONICAL_TOKENS

STRINGS = json.loads((Path(__file__).parent / "tokenizer_strings.json").read_text())
PROMPT = DEFAULT_PROMPT


def test_canonical_prompt(tokenizer):
    bos = tokenizer.encode_single_token("<|begin_of_text|>")
    assert [bos] + tokenizer.encode(PROMPT) == CANONICAL_TOKENS


def test_42(tokenizer):
    assert tokenizer.encode("42") == [2983]
    assert tokenizer.encode(" 42") == [220, 2983]
    assert tokenizer.decode([2983]) == "42"


def test_meta_test_sentence(tokenizer):
    ids = [128000] + tokenizer.encode("This is a test sentence.") + [128001]
    assert ids == [128000, 2028, 374, 264, 1296, 11914, 13, 128001]


def test_vocabulary_and_special_tokens(tokenizer):
    assert tokenizer.n_vocab == 128256
    expected = {
        128000: "<|begin_of_text|>",
        128001: "<|end_of_text|>",
        128002: "<|reserved_special_token_0|>",
        128005: "<|reserved_special_token_3|>",
        128006: "<|start_header_id|>",
        128007: "<|end_header_id|>",
        128008: "<|reserved_special_token_4|>",
        128009: "<|eot_id|>",
        128010: "<|reserved_special_token_5|>",
        128255: "<|reserved_special_token_250|>",
    }
    for token_id, name in expected.items():
        assert tokenizer.encode_single_token(name) == token_id
        assert tokenizer.decode([token_id]) == name
    assert len(tokenizer.special_tokens_set) == 256


@pytest.mark.parametrize("text", STRINGS, ids=range(len(STRINGS)))
def test_same_tokens_as_meta(tokenizer, meta, text):
    # Text that spells a special token is encoded as ordinary text by both (Meta's default).
    assert tokenizer.encode(text, disallowed_special=()) == meta.encode(text, bos=False, eos=False)
    assert tokenizer.decode(tokenizer.encode(text, disallowed_special=())) == text


def test_spelled_special_tokens_need_explicit_permission(tokenizer):
    with pytest.raises(ValueError):
        tokenizer.encode("<|eot_id|>")
    assert tokenizer.encode("<|eot_id|>", allowed_special="all") == [128009]
    assert len(tokenizer.encode("<|eot_id|>", disallowed_special=())) > 1


def test_prefers_tokenizer_in_checkpoint_folder(tmp_path):
    copy = tmp_path / "tokenizer.model"
    copy.write_bytes(tokenizer_setup.packaged_tokenizer_model().read_bytes())
    assert tokenizer_setup.find_tokenizer_model(tmp_path) == copy
    assert (
        tokenizer_setup.find_tokenizer_model(tmp_path / "elsewhere")
        == tokenizer_setup.packaged_tokenizer_model()
    )


def test_missing_without_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizer_setup, "packaged_tokenizer_model", lambda: None)
    with pytest.raises(tokenizer_setup.TokenizerFileError, match="pip install llama-models"):
        tokenizer_setup.find_tokenizer_model(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 2183982\n",
            "Git LFS pointer",
        ),
        (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n", "HTML page"),
        (b"\n\x0b\n\x05<unk>\x15\x00\x00\x00\x00\x18\x02" * 20, "SentencePiece"),
        (b"IQ== 0\nIg== 1\n", "truncated"),
        (b"IQ== 0\nnot a rank line at all\n", "line 2"),
    ],
)
def test_wrong_files_get_one_clear_sentence(tmp_path, content, message):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(content)
    with pytest.raises(tokenizer_setup.TokenizerFileError, match=message):
        tokenizer_setup.load_tokenizer(TokenizerSource("tokenizer.model", path))


def test_truncated_real_file(tmp_path):
    data = tokenizer_setup.packaged_tokenizer_model().read_bytes()
    (tmp_path / "tokenizer.model").write_bytes(data[: len(data) // 2])
    with pytest.raises(tokenizer_setup.TokenizerFileError, match="truncated"):
        tokenizer_setup.load_tokenizer(
            TokenizerSource("tokenizer.model", tmp_path / "tokenizer.model")
        )


@pytest.mark.slow  # 5 s over 1,112,064 code points: in `make test`, not `make quick`
def test_the_from_scratch_split_cuts_around_every_character_as_tiktoken_does(tokenizer):
    """tokenizer_setup.split_regex, which the notebook's BPE splits with, against tiktoken on
    every code point c (surrogates aside), in "c/A": tiktoken cuts before "/A" only where c is a
    letter or a number to its Unicode tables, and so must the split. (The `regex` package's
    tables are newer: with Meta's pattern as `regex` compiles it, 17,480 characters assigned
    in Unicode 17.0 and later split otherwise, found by hypothesis on 2026-12-06.)"""
    split = tokenizer_setup.split_regex(tokenizer)
    slash_a = tokenizer.encode_single_token("/A")
    differ = [
        hex(code)
        for code in [*range(0xD800), *range(0xE000, 0x110000)]
        if (split.findall(chr(code) + "/A")[-1] == "/A")
        != (tokenizer.encode(chr(code) + "/A", disallowed_special=())[-1] == slash_a)
    ]
    assert not differ, f"{len(differ)} characters split otherwise, the first {differ[:10]}"
