"""A vocabulary file read by the notebook's tokenizer, against Hugging Face's `tokenizers`
reading the same vocabulary, and against a file of expected tokens.

    python -m tools.check_vocabulary FILE [--expected TEXTS IDS]

FILE: a tokenizer.json or a GGUF file (its vocabulary; Qwen3's, say, which is not in the
repository). The reference tokenizer is the file itself for a tokenizer.json; for a GGUF
file it is built from the file's tokens and merges, with Qwen's pattern and NFC. Both encode
every ranked token's text and the tests' 1,349 tokenizer strings (tests/
tokenizer_parity_strings.json, read as data);
`--expected` adds llama.cpp's test vectors (models/ggml-vocab-*.gguf.inp and .out in its source:
texts separated by `__ggml_vocab_test__` lines, and one line of ids each). Prints how many
texts were compared and each difference; exits 1 if there was one. Not part of `make test`:
the files are not in the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, models

import tokenizer_setup
from plumbing import REPO_DIR, gguf_files
from plumbing.checkpoint_files import GGUF_MAGIC, TokenizerSource
from testbeds.hf_folder import qwen_tokenizer

# the tests' 1,349 tokenizer strings (many languages and scripts, code, numbers, whitespace)
STRINGS = REPO_DIR / "tests" / "tokenizer_parity_strings.json"

SEPARATOR = "\n__ggml_vocab_test__\n"


def reference_for(path: Path) -> Tokenizer:
    """Hugging Face's tokenizer of the file, a special token's name in a text read as text."""
    if path.read_bytes()[:4] != GGUF_MAGIC:
        reference = Tokenizer.from_file(str(path))
    else:
        _, tokens, types, merges, pre = gguf_files.vocabulary_details(path)
        if pre != "qwen2":
            sys.exit(f"{path} is split by {pre!r}: this reads GGUF vocabularies split as Qwen's")
        n_ranked = types.index(next(kind for kind in types if kind != 1))
        vocab = {text: i for i, text in enumerate(tokens[:n_ranked])}
        pairs = [tuple(merge.split(" ")) for merge in merges]
        reference = qwen_tokenizer(models.BPE(vocab, pairs))
        reference.add_special_tokens(tokens[n_ranked:])
    reference.encode_special_tokens = True
    return reference


def expected_vectors(texts: Path, ids: Path) -> list[tuple[str, list[int]]]:
    with open(texts, encoding="utf-8", newline="") as file:  # "\r" kept as written
        inputs = file.read().removesuffix(SEPARATOR).split(SEPARATOR)
    lines = ids.read_text().removesuffix("\n").split("\n")
    return [
        (text, [int(i) for i in line.split()]) for text, line in zip(inputs, lines, strict=True)
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("--expected", nargs=2, type=Path, metavar=("TEXTS", "IDS"))
    arguments = parser.parse_args()
    path = arguments.file
    kind = "gguf" if path.read_bytes()[:4] == GGUF_MAGIC else "tokenizer.json"
    ours = tokenizer_setup.load_tokenizer(TokenizerSource(kind, path))
    reference = reference_for(path)
    texts = [token.decode("utf-8", "replace") for token in ours._mergeable_ranks]
    texts += json.loads(STRINGS.read_text(encoding="utf-8"))
    cases = [(text, reference.encode(text, add_special_tokens=False).ids) for text in texts]
    vectors = expected_vectors(*arguments.expected) if arguments.expected else []
    differences = 0
    for text, expected in cases + vectors:
        got = ours.encode(text, disallowed_special=())
        if got != expected:
            differences += 1
            print(f"differs: {text[:60]!r}: ours {got[:12]}, expected {expected[:12]}")
    print(
        json.dumps(
            {
                "file": str(path),
                "ranked tokens": len(ours._mergeable_ranks),
                "special tokens": len(ours.special_tokens_set),
                "texts against tokenizers": len(cases),
                "expected vectors": len(vectors),
                "differences": differences,
            }
        )
    )
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
