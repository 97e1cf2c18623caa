"""Build Meta's Llama 3 tokenizer with tiktoken — plumbing only.

Llama 3 uses a byte-level BPE: `tokenizer.model` is a text file of
`<base64 bytes> <rank>` lines (128,000 of them), to which Meta's code adds a
regex that splits text into pieces before merging, and 256 special tokens.
We never ship Meta's file: it comes from the checkpoint folder, or else from
the copy inside Meta's `llama-models` package. A Hugging Face folder's
`tokenizer.json` and a GGUF file's metadata hold the same vocabulary in other
spellings; each is checked to be Llama 3's.

Which of them a checkpoint has is not decided here: `checkpoints.open_checkpoint`
hands over `tokenizer_source` (its kind and file), and `load_tokenizer` reads that.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import unicodedata
from pathlib import Path

import regex
import tiktoken

from plumbing import gguf_files
from plumbing.checkpoint_checks import download_mistake
from plumbing.checkpoint_files import TokenizerSource
from plumbing.friendly_errors import SetupError

# Meta's pre-tokenizer regex for Llama 3 (fact, from Meta's tokenizer).
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def split_regex(tokenizer: tiktoken.Encoding) -> regex.Pattern:
    """SPLIT_PATTERN compiled with the `regex` package, its letters and numbers those of the
    tokenizer's own Unicode tables, so that it cuts any text into the pieces tiktoken cuts.

    The two packages carry Unicode tables of different ages (in December 2026 tiktoken's are
    Unicode 16.0's, `regex`'s 17.0's and newer): a character assigned since is a letter or a
    number to `regex` and neither to tiktoken, and text around it splits differently. Such
    characters are among those `regex` calls letters or numbers while Python's own
    `unicodedata` (Unicode 14 to 16) has them unassigned; the tokenizer is asked about each
    (c + "/A" splits before "/A" only where c is a letter or a number), and those it does not
    take as one are left out of both classes.
    """
    slash_a = tokenizer.encode_single_token("/A")
    every_character = "".join(map(chr, [*range(0xD800), *range(0xE000, 0x110000)]))
    letters_and_numbers = regex.findall(r"[\p{L}\p{N}]", every_character)
    newer = [char for char in letters_and_numbers if unicodedata.category(char) == "Cn"]
    unknown = [c for c in newer if tokenizer.encode(c + "/A", disallowed_special=())[-1] != slash_a]
    if not unknown:
        return regex.compile(SPLIT_PATTERN)
    ranges = []  # consecutive characters as one range: the class compiles in milliseconds
    for char in unknown:
        if ranges and ord(char) == ord(ranges[-1][1]) + 1:
            ranges[-1][1] = char
        else:
            ranges.append([char, char])
    left_out = "".join(f"{regex.escape(first)}-{regex.escape(last)}" for first, last in ranges)
    pattern = SPLIT_PATTERN.replace(r"\p{L}", rf"[\p{{L}}--[{left_out}]]")
    pattern = pattern.replace(r"\p{N}", rf"[\p{{N}}--[{left_out}]]")
    return regex.compile(pattern, regex.VERSION1)


N_MERGEABLE_RANKS = 128_000
N_SPECIAL_TOKENS = 256

# SHA-256 of Llama 3's 128,000 ranked tokens (see ranks_digest), computed from Meta's
# tokenizer.model: a tokenizer.json must hold exactly this vocabulary.
LLAMA3_RANKS_SHA256 = "647326d6a16cf9386ba723b8726e3d2196e18ec8b82e4338bf5b529c07b34974"

# The named special tokens of Llama 3, in id order from 128000. Every other id
# up to 128255 is a reserved token, numbered as Meta's Llama 3 release numbers them.
_NAMED_SPECIAL_TOKENS = {
    0: "<|begin_of_text|>",
    1: "<|end_of_text|>",
    6: "<|start_header_id|>",
    7: "<|end_header_id|>",
    9: "<|eot_id|>",
}


class TokenizerFileError(SetupError):
    """tokenizer.model is missing or is not Llama 3's BPE file."""


def special_token_names() -> list[str]:
    """The 256 special token strings, index i is id N_MERGEABLE_RANKS + i."""
    names, reserved = [], 0
    for offset in range(N_SPECIAL_TOKENS):
        if offset in _NAMED_SPECIAL_TOKENS:
            names.append(_NAMED_SPECIAL_TOKENS[offset])
        else:
            names.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return names


def packaged_tokenizer_model() -> Path | None:
    """The tokenizer.model inside Meta's `llama-models` package, if installed."""
    spec = importlib.util.find_spec("llama_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "llama3" / "tokenizer.model"
        if candidate.is_file():
            return candidate
    return None


def find_tokenizer_model(checkpoint_dir: str | Path | None) -> Path:
    """tokenizer.model from the checkpoint folder, else from `llama-models`."""
    if checkpoint_dir is not None:
        candidate = Path(checkpoint_dir) / "tokenizer.model"
        if candidate.exists():
            return candidate
    packaged = packaged_tokenizer_model()
    if packaged is not None:
        return packaged
    where = f"in {checkpoint_dir} " if checkpoint_dir is not None else ""
    raise TokenizerFileError(
        f"No tokenizer.model {where}and Meta's llama-models package is not installed: "
        "run `pip install llama-models` (it ships Llama 3's tokenizer.model) or copy "
        "tokenizer.model from your Llama 3 download into the checkpoint folder."
    )


def _describe_wrong_file(path: Path, head: bytes) -> str | None:
    """Name the usual wrong files in tokenizer.model's place."""
    if mistake := download_mistake(path):
        return mistake
    if head.startswith(b"\n") or b"\x00" in head:
        return "a binary file — probably a Llama 2 SentencePiece model, which Llama 3 does not use"
    return None


def read_mergeable_ranks(path: str | Path) -> dict[bytes, int]:
    """Parse `<base64 token> <rank>` lines, with one clear error for a wrong file."""
    path = Path(path)
    data = path.read_bytes()
    wrong = _describe_wrong_file(path, data[:512])
    if wrong:
        raise TokenizerFileError(
            f"{path} is {wrong}; Llama 3 needs its tiktoken BPE file tokenizer.model."
        )
    ranks: dict[bytes, int] = {}
    for line_number, line in enumerate(data.splitlines(), start=1):
        if not line:
            continue
        try:
            token_b64, rank = line.split()
            ranks[base64.b64decode(token_b64, validate=True)] = int(rank)
        except ValueError:
            raise TokenizerFileError(
                f"{path} line {line_number} is not `<base64> <rank>`: this is not Llama 3's "
                "tokenizer.model (use the one from the same download as the weights)."
            ) from None
    if len(ranks) != N_MERGEABLE_RANKS or sorted(ranks.values()) != list(range(N_MERGEABLE_RANKS)):
        raise TokenizerFileError(
            f"{path} has {len(ranks):,} BPE ranks, Llama 3's has {N_MERGEABLE_RANKS:,} numbered 0…"
            f"{N_MERGEABLE_RANKS - 1}: the file is truncated or from another model; download it "
            "again."
        )
    return ranks


def ranks_digest(ranks: dict[bytes, int]) -> str:
    """SHA-256 over every (rank, token) in rank order: equal digests, equal vocabularies."""
    digest = hashlib.sha256()
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        digest.update(rank.to_bytes(4, "little") + len(token).to_bytes(2, "little") + token)
    return digest.hexdigest()


def byte_level_alphabet() -> dict[str, int]:
    """The printable character byte-level BPE files write for each of the 256 bytes.

    GPT-2's table (a fact): the printable Latin-1 bytes stand for themselves; the 68 others
    (controls, space, soft hyphen …) become the characters 256, 257, … in byte order.
    """
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    alphabet, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            alphabet[chr(byte)] = byte
        else:
            alphabet[chr(256 + shifted)] = byte
            shifted += 1
    return alphabet


def read_tokenizer_json(path: str | Path) -> tuple[dict[bytes, int], dict[str, int]]:
    """A Hugging Face tokenizer.json as tiktoken ranks and special tokens, checked to be Llama
    3's."""
    path = Path(path)
    fix = "use the tokenizer.json from the same Llama 3 download as the weights"
    if mistake := download_mistake(path):
        raise TokenizerFileError(f"{path} is {mistake}; {fix}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise TokenizerFileError(
            f"{path} is not readable JSON ({type(error).__name__}): {fix}."
        ) from None
    model = data.get("model") if isinstance(data, dict) else None
    if (
        not isinstance(model, dict)
        or model.get("type") != "BPE"
        or not isinstance(model.get("vocab"), dict)
    ):
        kind = model.get("type") if isinstance(model, dict) else None
        raise TokenizerFileError(
            f"{path} is not a byte-level BPE tokenizer (model type {kind!r}), which Llama 3's is: "
            f"{fix}."
        )
    ranks = byte_level_ranks(model["vocab"].items(), path, fix)
    added = data.get("added_tokens", [])
    if not isinstance(added, list) or not all(
        isinstance(token, dict)
        and isinstance(token.get("content"), str)
        and type(token.get("id")) is int
        for token in added
    ):
        raise TokenizerFileError(
            f"{path}: its added_tokens is not a list of tokens, each a text `content` and an "
            f"integer `id`, as Llama 3's is: {fix}."
        )
    special = {token["content"]: token["id"] for token in added if token["id"] >= N_MERGEABLE_RANKS}
    check_special_tokens(special, path, fix)
    return ranks, special


def byte_level_ranks(vocab, path: Path, fix: str) -> dict[bytes, int]:
    """(text, id) pairs written in byte-level BPE's alphabet → tiktoken's ranks, checked to be
    exactly Llama 3's 128,000 tokens."""
    alphabet = byte_level_alphabet()
    ranks: dict[bytes, int] = {}
    for text, rank in vocab:
        if not isinstance(rank, int):
            raise TokenizerFileError(
                f"{path}: token {text!r} has id {rank!r}, not an integer, so this is not Llama "
                f"3's vocabulary: {fix}."
            )
        try:
            ranks[bytes(alphabet[char] for char in text)] = rank
        except KeyError:
            raise TokenizerFileError(
                f"{path}: token {text!r} is not written in byte-level BPE's alphabet, so this is "
                f"not Llama 3's vocabulary: {fix}."
            ) from None
    if ranks_digest(ranks) != LLAMA3_RANKS_SHA256:
        raise TokenizerFileError(
            f"{path} holds {len(ranks):,} BPE tokens that are not Llama 3's vocabulary (another "
            f"model's tokenizer, such as Qwen3's, which this notebook does not read yet): {fix}."
        )
    return ranks


def check_special_tokens(special: dict[str, int], path: Path, fix: str) -> None:
    """The 256 special tokens at ids 128,000 …, the named ones where Llama 3 has them."""
    expected = {name: N_MERGEABLE_RANKS + offset for offset, name in _NAMED_SPECIAL_TOKENS.items()}
    wrong = [name for name, token_id in expected.items() if special.get(name) != token_id]
    if wrong or sorted(special.values()) != list(
        range(N_MERGEABLE_RANKS, N_MERGEABLE_RANKS + N_SPECIAL_TOKENS)
    ):
        what = (
            f"{wrong[0]} is not id {expected[wrong[0]]}"
            if wrong
            else f"its {len(special)} special tokens are not ids "
            f"{N_MERGEABLE_RANKS}…{N_MERGEABLE_RANKS + N_SPECIAL_TOKENS - 1}"
        )
        raise TokenizerFileError(f"{path}: {what}, as in Llama 3: {fix}.")


def read_gguf_tokenizer(path: str | Path) -> tuple[dict[bytes, int], dict[str, int]]:
    """The vocabulary in a GGUF file's metadata as tiktoken ranks and special tokens, checked
    to be Llama 3's: byte-level BPE ("gpt2" in llama.cpp's words), the same 128,000 ranked
    tokens, and the 256 special tokens after them."""
    path = Path(path)
    fix = "use a Llama 3 GGUF file"
    kind, tokens = gguf_files.vocabulary(path)
    if kind != "gpt2":
        what = {"llama": "a SentencePiece vocabulary, like Llama 2's"}.get(kind, f"{kind!r}")
        raise TokenizerFileError(
            f"{path} holds {what} ({len(tokens):,} tokens), not Llama 3's byte-level BPE of "
            f"{N_MERGEABLE_RANKS + N_SPECIAL_TOKENS:,} tokens: {fix}."
        )
    ranks = byte_level_ranks(
        ((text, rank) for rank, text in enumerate(tokens[:N_MERGEABLE_RANKS])), path, fix
    )
    special = {text: i for i, text in enumerate(tokens) if i >= N_MERGEABLE_RANKS}
    check_special_tokens(special, path, fix)
    return ranks, special


def special_tokens() -> dict[str, int]:
    """Llama 3's 256 special tokens after the ranked ones, as Meta's code numbers them."""
    return {name: N_MERGEABLE_RANKS + i for i, name in enumerate(special_token_names())}


# How each kind of vocabulary a checkpoint hands over is read: ranks and special tokens.
READERS = {
    "tokenizer.model": lambda path: (read_mergeable_ranks(path), special_tokens()),
    "tokenizer.json": read_tokenizer_json,
    "gguf": read_gguf_tokenizer,
}


def load_tokenizer(source: TokenizerSource | None = None) -> tiktoken.Encoding:
    """Llama 3's tokenizer: BPE ranks + Meta's split pattern + 256 special tokens, from what
    the checkpoint hands over (`checkpoints.open_checkpoint(path).tokenizer_source`): a GGUF
    file's metadata, a tokenizer.json, or a tokenizer.model — the one in `llama-models`
    when there is none beside the weights, or with no source at all."""
    if source is None or (source.kind == "tokenizer.model" and not source.path.exists()):
        folder = None if source is None else source.path.parent
        source = TokenizerSource("tokenizer.model", find_tokenizer_model(folder))
    ranks, special = READERS[source.kind](source.path)
    return tiktoken.Encoding(
        name=f"llama3:{source.path}",
        pat_str=SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=special,
    )
