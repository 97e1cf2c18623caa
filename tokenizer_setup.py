"""Build Meta's Llama 3 tokenizer (or Qwen3's) with tiktoken — plumbing only.

Llama 3 uses a byte-level BPE: `tokenizer.model` is a text file of
`<base64 bytes> <rank>` lines (128,000 of them), to which Meta's code adds a
regex that splits text into pieces before merging, and 256 special tokens.
We never ship Meta's file: it comes from the checkpoint folder, or else from
the copy inside Meta's `llama-models` package. A Hugging Face folder's
`tokenizer.json` and a GGUF file's metadata hold the same vocabulary in other
spellings; each is checked to be Llama 3's.

Llama 4's tokenizer.model is the same kind of file with 200,000 lines; Meta's code gives it
2,048 special tokens and the split pattern of OpenAI's o200k, which tells capitals from
lower-case letters and keeps combining marks in words. The number of lines says which.

Qwen3's vocabulary is a byte-level BPE too (151,643 ranked tokens, then its special tokens),
with a split pattern of its own, Unicode NFC before splitting, no token that begins a text,
and ChatML's turns. A tokenizer.json or GGUF vocabulary that is not Llama 3's is read as such
a vocabulary when its merges agree with its ranks (then tiktoken's rule, lowest rank first,
gives what merging in the file's order gives) and it has ChatML's special tokens.

Which of them a checkpoint has is not decided here: `checkpoints.open_checkpoint`
hands over `tokenizer_source` (its kind and file), and `load_tokenizer` reads that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.util
import json
import unicodedata
from pathlib import Path
from typing import NamedTuple

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
# Meta's for Llama 4 (fact, from Meta's llama4 tokenizer: OpenAI's o200k pattern). A word is
# capitals then lower-case letters, marks among either, an English contraction at its end.
LLAMA4_SPLIT_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen's (Qwen2 to Qwen3; fact, from its tokenizer.json): each digit a piece of its own.
QWEN_SPLIT_PATTERN = SPLIT_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
# llama.cpp's names for them in a GGUF file's tokenizer.ggml.pre (fact, from llama.cpp).
GGUF_SPLIT_PATTERNS = {"llama-bpe": SPLIT_PATTERN, "qwen2": QWEN_SPLIT_PATTERN}


class Tokenizer(tiktoken.Encoding):
    """tiktoken's tokenizer, and what its vocabulary does around the BPE: the tokens a text
    begins with (`begin_of_text`: Llama 3's `<|begin_of_text|>`; Qwen3 has none), the one that
    ends a document, the one that ends a chat turn, those that end generation, the chat format
    (`{question}` where the user's text goes), and whether text is put in Unicode NFC first
    (Qwen3's does; Llama 3's not)."""

    def __init__(
        self, *, nfc: bool, begin: str | None, end: str, turn_end: str, chat: str, **encoding
    ):
        super().__init__(**encoding)
        self.around = dict(nfc=nfc, begin=begin, end=end, turn_end=turn_end, chat=chat)
        self.nfc, self.chat_template = nfc, chat
        self.begin_of_text = [] if begin is None else [self.encode_single_token(begin)]
        self.end_of_text, self.turn_end = map(self.encode_single_token, (end, turn_end))
        self.stop_tokens = {self.end_of_text, self.turn_end}

    def __getstate__(self) -> object:  # a copy or a pickle keeps what is around the BPE too
        return {**super().__getstate__(), **self.around}

    def __setstate__(self, value) -> None:
        self.__init__(**value)

    def normalize(self, text: str) -> str:
        return unicodedata.normalize("NFC", text) if self.nfc else text

    def encode(self, text: str, *arguments, **keywords) -> list[int]:
        return super().encode(self.normalize(text), *arguments, **keywords)

    def encode_ordinary(self, text: str) -> list[int]:
        return super().encode_ordinary(self.normalize(text))

    def decode(self, tokens, errors: str = "replace") -> str:
        # A model can have more output rows than its vocabulary has tokens (Qwen3: 151,936 rows,
        # 151,669 tokens): an id past them is no text, as Hugging Face's tokenizers decode it.
        return super().decode([token for token in tokens if token < self.n_vocab], errors)


# What each kind of vocabulary does around its BPE (facts: Meta's Llama 3 code, Qwen's
# tokenizer files and chat template).
LLAMA3_AROUND = dict(
    nfc=False,
    begin="<|begin_of_text|>",
    end="<|end_of_text|>",
    turn_end="<|eot_id|>",
    chat="<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
)
LLAMA4_AROUND = dict(
    nfc=False,
    begin="<|begin_of_text|>",
    end="<|end_of_text|>",
    turn_end="<|eot|>",
    chat="<|begin_of_text|><|header_start|>user<|header_end|>\n\n{question}<|eot|>"
    "<|header_start|>assistant<|header_end|>\n\n",
)
CHATML_AROUND = dict(
    nfc=True,
    begin=None,
    end="<|endoftext|>",
    turn_end="<|im_end|>",
    chat="<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",
)


class Vocabulary(NamedTuple):
    """What a vocabulary file holds, read: ranked tokens, special tokens, the split pattern,
    and what is done around the BPE (LLAMA3_AROUND or CHATML_AROUND)."""

    ranks: dict[bytes, int]
    special: dict[str, int]
    pattern: str = SPLIT_PATTERN
    around: dict = LLAMA3_AROUND


def split_regex(tokenizer: tiktoken.Encoding) -> regex.Pattern:
    """The tokenizer's split pattern (SPLIT_PATTERN, LLAMA4_SPLIT_PATTERN or Qwen's) compiled
    with the `regex` package, its classes of characters (letters, numbers, marks) those of the
    tokenizer's own Unicode tables, so that it cuts any text into the pieces tiktoken cuts.

    The two packages carry Unicode tables of different ages (in December 2026 tiktoken's are
    older than `regex`'s): a character assigned since is a letter, a number or a mark to
    `regex` and unassigned to tiktoken, and text around it splits differently. Such characters
    are among those `regex` puts in one of the pattern's classes while Python's own
    `unicodedata` (Unicode 14 to 16) has them unassigned; the tokenizer is asked about each
    (c + "/A" splits before "/A" only where c is in one of those classes, under all three
    patterns), and those it does not take as one are left out of every class.
    """
    pattern = tokenizer._pat_str
    if b"/A" not in tokenizer._mergeable_ranks:  # a vocabulary without it cannot be asked
        return regex.compile(pattern)
    slash_a = tokenizer.encode_single_token("/A")
    classes = sorted(set(regex.findall(r"\\p\{(\w+)\}", pattern)))  # L, N; Lu, M …
    any_class = "[" + "".join(rf"\p{{{name}}}" for name in classes) + "]"
    every_character = "".join(map(chr, [*range(0xD800), *range(0xE000, 0x110000)]))
    in_a_class = regex.findall(any_class, every_character)
    newer = [char for char in in_a_class if unicodedata.category(char) == "Cn"]
    unknown = [c for c in newer if tokenizer.encode(c + "/A", disallowed_special=())[-1] != slash_a]
    if not unknown:
        return regex.compile(pattern)
    ranges = []  # consecutive characters as one range: the class compiles in milliseconds
    for char in unknown:
        if ranges and ord(char) == ord(ranges[-1][1]) + 1:
            ranges[-1][1] = char
        else:
            ranges.append([char, char])
    left_out = "".join(f"{regex.escape(first)}-{regex.escape(last)}" for first, last in ranges)
    for name in classes:
        pattern = pattern.replace(rf"\p{{{name}}}", rf"[\p{{{name}}}--[{left_out}]]")
    return regex.compile(pattern, regex.VERSION1)


N_MERGEABLE_RANKS = 128_000
N_SPECIAL_TOKENS = 256
LLAMA4_MERGEABLE_RANKS = 200_000
LLAMA4_SPECIAL_TOKENS = 2_048

# SHA-256 of Llama 3's 128,000 ranked tokens (see ranks_digest), computed from Meta's
# tokenizer.model: a tokenizer.json must hold exactly this vocabulary.
LLAMA3_RANKS_SHA256 = "647326d6a16cf9386ba723b8726e3d2196e18ec8b82e4338bf5b529c07b34974"
# … and of Llama 4's 200,000, from the tokenizer.model in llama-models' llama4 folder.
LLAMA4_RANKS_SHA256 = "d3b1d3406107bb1141fcf4f7c91b3b4db98d3e16d308a23fc067257303ea05a6"

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


def llama4_special_token_names() -> list[str]:
    """Llama 4's 2,048 special token strings, index i is id LLAMA4_MERGEABLE_RANKS + i (fact,
    from Meta's llama4 tokenizer: named tokens and numbered reserved ones, in its order)."""

    def reserved(kind: str, first: int, last: int) -> list[str]:
        return [f"<|{kind}_reserved_special_token_{i}|>" for i in range(first, last + 1)]

    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|fim_prefix|>", "<|fim_middle|>"]
    names += ["<|fim_suffix|>", "<|header_start|>", "<|header_end|>", "<|eom|>", "<|eot|>"]
    names += ["<|step|>", *reserved("text_post_train", 0, 5), "<|python_start|>"]
    names += ["<|python_end|>", "<|finetune_right_pad|>", *reserved("text_post_train", 8, 68)]
    names += ["<|image_start|>", "<|image_end|>", *reserved("vision", 0, 1)]
    names += ["<|tile_x_separator|>", "<|tile_y_separator|>", *reserved("vision", 2, 5)]
    names += ["<|image|>", *reserved("vision", 6, 6), "<|patch|>", *reserved("vision", 7, 1047)]
    names += [*reserved("reasoning", 0, 7), "<|reasoning_thinking_start|>"]
    names += ["<|reasoning_thinking_end|>"]
    count = LLAMA4_SPECIAL_TOKENS - len(names)
    return names + [f"<|reserved_special_token_{i}|>" for i in range(count)]


def packaged_tokenizer_model(family: str = "llama3") -> Path | None:
    """The tokenizer.model inside Meta's `llama-models` package, if installed: Llama 3's, or
    with family="llama4" Llama 4's."""
    spec = importlib.util.find_spec("llama_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / family / "tokenizer.model"
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
            # base64.b64decode(…, validate=True) without its per-call checks: 0.1 s on 200,000
            ranks[binascii.a2b_base64(token_b64, strict_mode=True)] = int(rank)
        except ValueError:
            raise TokenizerFileError(
                f"{path} line {line_number} is not `<base64> <rank>`: this is not Llama 3's "
                "tokenizer.model (use the one from the same download as the weights)."
            ) from None
    known = (N_MERGEABLE_RANKS, LLAMA4_MERGEABLE_RANKS)
    if len(ranks) not in known or sorted(ranks.values()) != list(range(len(ranks))):
        raise TokenizerFileError(
            f"{path} has {len(ranks):,} BPE ranks; Llama 3's has {N_MERGEABLE_RANKS:,} and "
            f"Llama 4's {LLAMA4_MERGEABLE_RANKS:,}, numbered from 0: the file is truncated or "
            "from another model; download it again."
        )
    return ranks


def read_tokenizer_model(path: str | Path) -> Vocabulary:
    """Meta's tokenizer.model: Llama 3's (128,000 ranks) or Llama 4's (200,000), with the
    special tokens, split pattern and chat format Meta's code gives each."""
    ranks = read_mergeable_ranks(path)
    if len(ranks) == N_MERGEABLE_RANKS:
        return Vocabulary(ranks, special_tokens())
    return llama4_vocabulary(ranks)


def llama4_vocabulary(ranks: dict[bytes, int]) -> Vocabulary:
    """Llama 4's ranks with the special tokens, split pattern and chat format Meta's code
    gives them."""
    special = {name: len(ranks) + i for i, name in enumerate(llama4_special_token_names())}
    return Vocabulary(ranks, special, LLAMA4_SPLIT_PATTERN, LLAMA4_AROUND)


def checked_llama4_vocabulary(ranks, special, pattern: str, path: Path, fix: str) -> Vocabulary:
    """A file's vocabulary that should be Llama 4's (tokenizer.json's, a GGUF file's): its
    200,000 ranks, special tokens and split pattern exactly Meta's, else one sentence."""
    vocabulary = llama4_vocabulary(ranks)
    if (
        ranks_digest(ranks) != LLAMA4_RANKS_SHA256
        or special != vocabulary.special
        or pattern != LLAMA4_SPLIT_PATTERN
    ):
        raise TokenizerFileError(
            f"{path} looks like Llama 4's vocabulary but does not hold its 200,000 tokens, "
            f"special tokens and split pattern as Meta's tokenizer has them: {fix}."
        )
    return vocabulary


def vocabulary_lines(source: TokenizerSource, tokenizer: Tokenizer) -> list[bytes]:
    """The ranked tokens as tokenizer.model's lines, `<base64 token> <rank>`: the file's own
    where the checkpoint reads one (or the copy in `llama-models`), else the vocabulary the
    tokenizer read from a tokenizer.json or a GGUF file, written the same way."""
    if source.kind == "tokenizer.model":
        return find_tokenizer_model(source.path.parent).read_bytes().splitlines()
    ranked = sorted(tokenizer._mergeable_ranks.items(), key=lambda item: item[1])
    return [base64.b64encode(token) + b" %d" % rank for token, rank in ranked]


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


def read_tokenizer_json(path: str | Path) -> Vocabulary:
    """A Hugging Face tokenizer.json as tiktoken ranks and special tokens: Llama 3's or Llama
    4's, checked to be, or another byte-level BPE with ChatML's special tokens, like Qwen3's."""
    path = Path(path)
    fix = "use the tokenizer.json from the same download as the weights"
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
            f"{path} is not a byte-level BPE tokenizer (model type {kind!r}), which Llama 3's and "
            f"Qwen3's are: {fix}."
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
    digest = ranks_digest(ranks)
    if digest == LLAMA3_RANKS_SHA256:
        special = {t["content"]: t["id"] for t in added if t["id"] >= N_MERGEABLE_RANKS}
        check_special_tokens(special, path, fix)
        return Vocabulary(ranks, special)
    if digest == LLAMA4_RANKS_SHA256:  # Llama 4's vocabulary: its special tokens as Meta's
        special = {t["content"]: t["id"] for t in added if t["id"] >= LLAMA4_MERGEABLE_RANKS}
        pattern = split_pattern_of(data.get("pre_tokenizer"), path, fix)
        return checked_llama4_vocabulary(ranks, special, pattern, path, fix)
    special = {token["content"]: token["id"] for token in added}
    normalizer = data.get("normalizer")
    if normalizer not in (None, {"type": "NFC"}):
        what = normalizer.get("type") if isinstance(normalizer, dict) else normalizer
        raise TokenizerFileError(
            f"{path} normalizes text with {what!r}, where Qwen3's vocabulary uses NFC or nothing "
            f"and Llama 3's nothing: {fix}."
        )
    pattern = split_pattern_of(data.get("pre_tokenizer"), path, fix)
    around = CHATML_AROUND | {"nfc": normalizer is not None}
    return own_vocabulary(ranks, special, model.get("merges"), pattern, around, path, fix)


def split_pattern_of(pre_tokenizer, path: Path, fix: str) -> str:
    """A tokenizer.json's pre-tokenizer, as Llama 3's and Qwen3's have it (their split
    pattern, then the bytes in byte-level BPE's alphabet): the pattern, if it is one of theirs
    or Llama 4's. Only these are read: a regex from a file is code that can take forever on a
    text."""
    steps = pre_tokenizer.get("pretokenizers") if isinstance(pre_tokenizer, dict) else None
    split, byte_level = steps if isinstance(steps, list) and len(steps) == 2 else (None, None)
    if not isinstance(split, dict) or not isinstance(byte_level, dict):
        split, byte_level = {}, {}
    pattern = split.get("pattern")
    if (
        not isinstance(pattern, dict)
        or pattern.get("Regex") not in (SPLIT_PATTERN, QWEN_SPLIT_PATTERN, LLAMA4_SPLIT_PATTERN)
        or (split.get("type"), split.get("behavior"), split.get("invert"))
        != ("Split", "Isolated", False)
        or byte_level.get("type") != "ByteLevel"
        or byte_level.get("use_regex") is not False
        or byte_level.get("add_prefix_space") is not False
    ):
        raise TokenizerFileError(
            f"{path} does not split text as Llama 3's or Qwen3's tokenizer does (their split "
            f"pattern, then byte-level BPE's alphabet): {fix}."
        )
    return pattern["Regex"]


def own_vocabulary(ranks, special, merges, pattern: str, around: dict, path: Path, fix: str):
    """A vocabulary that is not Llama 3's, read as Qwen3's is: checked that its merges agree
    with its ranks, that its special tokens come after them, and that it has ChatML's."""
    needed = [around["end"], around["turn_end"], "<|im_start|>"]
    if missing := [name for name in needed if name not in special]:
        raise TokenizerFileError(
            f"{path} holds {len(ranks):,} BPE tokens that are not Llama 3's vocabulary, and no "
            f"{missing[0]}, so not one like Qwen3's either: {fix}."
        )
    taken = [name for name, token_id in special.items() if token_id < len(ranks) or not name]
    if taken or len(set(special.values())) != len(special):
        what = "two share an id"
        if taken:
            what = f"{taken[0]!r} has the id of a ranked token" if taken[0] else "one is empty"
        raise TokenizerFileError(f"{path}: of its special tokens, {what}: {fix}.")
    check_merges(merges, ranks, path, fix)
    return Vocabulary(ranks, special, pattern, around)


def check_merges(merges, ranks: dict[bytes, int], path: Path, fix: str) -> None:
    """The merges, in the file's order, each join two tokens into a token of a rank no lower
    than the one before, and every token past the 256 bytes is made by one: then merging
    the lowest rank first (tiktoken's rule, the from-scratch BPE's) merges as the file does."""
    alphabet = byte_level_alphabet()
    if not isinstance(merges, list):
        raise TokenizerFileError(f"{path} lists no merges, which a byte-level BPE needs: {fix}.")
    made, last = set(), -1
    for number, merge in enumerate(merges):
        pair = merge.split(" ") if isinstance(merge, str) else merge
        try:
            first, second = (bytes(alphabet[char] for char in part) for part in pair)
            rank = ranks[first + second] if first in ranks and second in ranks else None
        except (KeyError, TypeError, ValueError):
            rank = None
        if rank is None or rank < last:
            why = "does not join two tokens into one" if rank is None else "is out of rank order"
            raise TokenizerFileError(
                f"{path}: merge {number} ({merge!r}) {why}, so merging by rank, as this "
                f"notebook's BPE does, would not give the file's tokens: {fix}."
            )
        made.add(rank)
        last = rank
    if len(made) != len(ranks) - 256:
        raise TokenizerFileError(
            f"{path}: {len(ranks) - 256 - len(made):,} of its tokens are made by no merge, so "
            f"merging by rank would not give the file's tokens: {fix}."
        )


def byte_level_ranks(vocab, path: Path, fix: str) -> dict[bytes, int]:
    """(text, id) pairs written in byte-level BPE's alphabet → tiktoken's ranks: every byte a
    token, the ids numbered from 0 with none left out."""
    alphabet = byte_level_alphabet()
    ranks: dict[bytes, int] = {}
    for text, rank in vocab:
        if not isinstance(rank, int):
            raise TokenizerFileError(
                f"{path}: token {text!r} has id {rank!r}, not an integer, so this is not a "
                f"vocabulary the notebook reads: {fix}."
            )
        try:
            ranks[bytes(alphabet[char] for char in text)] = rank
        except KeyError:
            raise TokenizerFileError(
                f"{path}: token {text!r} is not written in byte-level BPE's alphabet, so this is "
                f"not a vocabulary the notebook reads: {fix}."
            ) from None
    if sorted(ranks.values()) != list(range(len(ranks))) or not all(
        bytes([byte]) in ranks for byte in range(256)
    ):
        raise TokenizerFileError(
            f"{path}: its {len(ranks):,} BPE tokens are not numbered 0, 1, 2 … with every byte "
            f"among them, as a byte-level BPE's are: {fix}."
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


def read_gguf_tokenizer(path: str | Path) -> Vocabulary:
    """The vocabulary in a GGUF file's metadata as tiktoken ranks and special tokens:
    byte-level BPE ("gpt2" in llama.cpp's words), either Llama 3's (the same 128,000 ranked
    tokens and the 256 special tokens after them), Llama 4's ("llama4": its 200,000 and 2,048)
    or, split by Qwen's pattern ("qwen2"), one like Qwen3's: its normal tokens ranked, the
    others special."""
    path = Path(path)
    fix = "use a Llama 3 or Qwen3 GGUF file"
    kind, tokens, types, merges, pre = gguf_files.vocabulary_details(path)
    if kind != "gpt2":
        what = {"llama": "a SentencePiece vocabulary, like Llama 2's"}.get(kind, f"{kind!r}")
        raise TokenizerFileError(
            f"{path} holds {what} ({len(tokens):,} tokens), not a byte-level BPE like Llama 3's "
            f"or Qwen3's: {fix}."
        )
    if pre == "llama4" or len(tokens) == LLAMA4_MERGEABLE_RANKS + LLAMA4_SPECIAL_TOKENS:
        # Llama 4's (llama.cpp names its pattern, Ollama may not): 200,000 ranks, Meta's specials
        ranks = byte_level_ranks(
            ((text, rank) for rank, text in enumerate(tokens[:LLAMA4_MERGEABLE_RANKS])), path, fix
        )
        special = {text: i for i, text in enumerate(tokens) if i >= LLAMA4_MERGEABLE_RANKS}
        return checked_llama4_vocabulary(ranks, special, LLAMA4_SPLIT_PATTERN, path, fix)
    if pre != "qwen2":  # Llama 3's ("llama-bpe"), or a file that does not say
        ranks = byte_level_ranks(
            ((text, rank) for rank, text in enumerate(tokens[:N_MERGEABLE_RANKS])), path, fix
        )
        if ranks_digest(ranks) != LLAMA3_RANKS_SHA256:
            raise TokenizerFileError(
                f"{path} holds {len(tokens):,} tokens that are not Llama 3's vocabulary (and "
                f"names its split pattern {pre!r}, not Qwen3's 'qwen2'): {fix}."
            )
        special = {text: i for i, text in enumerate(tokens) if i >= N_MERGEABLE_RANKS}
        check_special_tokens(special, path, fix)
        return Vocabulary(ranks, special)
    normal = 1  # llama.cpp's token type of a ranked token; control tokens are 3, added ones 4
    if not isinstance(types, list) or len(types) != len(tokens):
        raise TokenizerFileError(f"{path} gives no type for each of its tokens: {fix}.")
    n_ranked = next((i for i, kind in enumerate(types) if kind != normal), len(types))
    if normal in types[n_ranked:]:
        raise TokenizerFileError(
            f"{path}: its ranked tokens are not ids 0 … {n_ranked - 1} with the special tokens "
            f"after them: {fix}."
        )
    ranks = byte_level_ranks(((text, i) for i, text in enumerate(tokens[:n_ranked])), path, fix)
    special = {text: i for i, text in enumerate(tokens) if i >= n_ranked}
    pattern = GGUF_SPLIT_PATTERNS[pre]
    return own_vocabulary(ranks, special, merges, pattern, CHATML_AROUND, path, fix)


def special_tokens() -> dict[str, int]:
    """Llama 3's 256 special tokens after the ranked ones, as Meta's code numbers them."""
    return {name: N_MERGEABLE_RANKS + i for i, name in enumerate(special_token_names())}


# How each kind of vocabulary a checkpoint hands over is read.
READERS = {
    "tokenizer.model": read_tokenizer_model,
    "tokenizer.json": read_tokenizer_json,
    "gguf": read_gguf_tokenizer,
}


def load_tokenizer(source: TokenizerSource | None = None) -> Tokenizer:
    """Llama 3's tokenizer: BPE ranks + Meta's split pattern + 256 special tokens, from what
    the checkpoint hands over (`checkpoints.open_checkpoint(path).tokenizer_source`): a GGUF
    file's metadata, a tokenizer.json, or a tokenizer.model — the one in `llama-models`
    when there is none beside the weights, or with no source at all. A tokenizer.json or GGUF
    file with a vocabulary like Qwen3's gives that one, with its own pattern and specials; a
    tokenizer.model of 200,000 ranks, Llama 4's, gives Llama 4's."""
    if source is None or (source.kind == "tokenizer.model" and not source.path.exists()):
        folder = None if source is None else source.path.parent
        source = TokenizerSource("tokenizer.model", find_tokenizer_model(folder))
    vocabulary = READERS[source.kind](source.path)
    return Tokenizer(
        name=f"llama3:{source.path}",
        pat_str=vocabulary.pattern,
        mergeable_ranks=vocabulary.ranks,
        special_tokens=vocabulary.special,
        **vocabulary.around,
    )
