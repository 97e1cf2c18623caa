"""Read a GGUF file (llama.cpp's format, which Ollama and LM Studio download) as if it were
Meta's layout — plumbing only.

One file holds everything: the sizes as metadata (`llama.block_count`, …), the tokenizer's
vocabulary, and every tensor, memory-mapped by the `gguf` package (ggml's own reader).
`read_params` turns the metadata into params.json's keys; `GGUFWeights` hands out the
tensors under Meta's names, one at a time. llama.cpp's converter already put the q and k
rows back in Meta's order (its `permute()` undoes Hugging Face's), so no row moves here.
Q4_0's and Q4_K's blocks go to PyTorch's int4 kernel as they are, Q8_0's in two halves
(`quantization.from_file_blocks` builds the matrices in a background thread: Q4_K's minimum per
group becomes the kernel's zero point; Q6_K's are dequantized there too, with torch, and kept);
llama.cpp's other block formats by `gguf.quants`, in numpy.

(An Ollama model name, `llama3.2:1b`, is found by model_ids: the GGUF blob it names is read
here, where it lies.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import torch
from torch.utils._pytree import tree_map

from plumbing import (
    checkpoint_checks,
    checkpoint_files,
    hf_checkpoint,
    model_sizes,
    release_facts,
    tensor_names,
)
from plumbing.checkpoint_files import GGUF_MAGIC, TokenizerSource
from plumbing.friendly_errors import CheckpointError
from plumbing.tensor_names import NamedWeights

LAYOUT = "a GGUF file (llama.cpp, Ollama, LM Studio)"


def looks_like(path: Path) -> bool:
    """A file that starts with GGUF's magic bytes (or is named .gguf: then it is checked)."""
    return checkpoint_files.is_gguf(path)


ROPE_FACTORS = "rope_freqs.weight"  # Llama 3.1+: one factor per RoPE pair (see below)

# The architectures read (general.architecture): Llama 3's, and Qwen3's, whose metadata keys
# begin "qwen3." and which states its head width as the key length. llama.cpp's converter puts
# Llama's query and key rows in Meta's order (it rotates adjacent pairs) and leaves Qwen3's in
# Hugging Face's (it rotates halves): put back on reading, as a Hugging Face folder's are.
ARCHITECTURES = ("llama", "qwen3")

# params.json's keys from the metadata ("llama." stands for the architecture's own prefix).
METADATA_KEYS = {
    "dim": "llama.embedding_length",
    "n_layers": "llama.block_count",
    "n_heads": "llama.attention.head_count",
    "ffn_hidden": "llama.feed_forward_length",
    "norm_eps": "llama.attention.layer_norm_rms_epsilon",
    "rope_theta": "llama.rope.freq_base",
}
OPTIONAL_KEYS = {"n_kv_heads": "llama.attention.head_count_kv", "vocab_size": "llama.vocab_size"}

# The number formats read, and the torch dtype each tensor is handed out in: F32, F16 and
# BF16 as they are; llama.cpp's block formats dequantized into float32 by gguf.quants.
# Any other (F64, integer tensors) is named and refused.
IN_PLACE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
BLOCK_FORMATS = [
    "Q8_0",  # 32 int8 and one float16 scale per block: 8.5 bits per weight
    "Q4_0",  # 32 4-bit integers (-8 … 7) and one float16 scale: 4.5 bits
    "Q4_K",  # 256 weights in 8 groups, 6-bit scales and minimums: 4.5 bits (Q4_K_M's bulk)
    "Q6_K",  # 256 weights in 16 groups, 8-bit scales: 6.56 bits (Q4_K_M's output, some w2/wv)
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q2_K",
    "Q3_K",
    "Q5_K",  # llama.cpp's other legacy and K formats
    "IQ1_S",
    "IQ1_M",
    "IQ2_XXS",
    "IQ2_XS",
    "IQ2_S",
    "IQ3_XXS",
    "IQ3_S",
    "IQ4_NL",
    "IQ4_XS",
]
FORMATS = IN_PLACE | dict.fromkeys(BLOCK_FORMATS, torch.float32)

# The block formats read with torch, at memory speed (the others by gguf.quants, in numpy):
# bytes per block of 32 weights, each block a float16 scale d, then the integers.
# Q8_0: 32 int8 q, weight d·q. Q4_0: 16 bytes, byte j holding weight j in its low four bits
# and weight j + 16 in its high four, weight d·(q − 8).
TORCH_BLOCKS = {"Q8_0": 34, "Q4_0": 18}
BLOCK = 32


def block_scales(blocks: torch.Tensor) -> torch.Tensor:
    """Q8_0's or Q4_0's blocks, bytes [rows × blocks × bytes per block], each beginning with its
    float16 scale d → the scales [rows × blocks] in float32. Read as float16 numbers in place
    where the bytes allow it (one strided read; the two bytes copied out first took twice as
    long)."""
    if blocks.is_contiguous() and blocks.storage_offset() % 2 == 0 and blocks.shape[-1] % 2 == 0:
        return blocks.view(torch.float16)[..., 0].float()
    return blocks[..., :2].contiguous().view(torch.float16)[..., 0].float()


def ints_and_scales(kind: str, data) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of Q8_0 or Q4_0 blocks (bytes [rows × blocks·bytes per block]) → the integers
    [rows × K] as int8 (Q4_0's in -8 … 7) and one float32 scale per 32 [rows × K/32]."""
    raw = torch.as_tensor(np.asarray(data)).reshape(len(data), -1, TORCH_BLOCKS[kind])
    scales = block_scales(raw)
    if kind == "Q8_0":
        ints = raw[..., 2:].contiguous().view(torch.int8)
    else:
        nibbles = raw[..., 2:]
        ints = torch.cat([nibbles & 15, nibbles >> 4], dim=-1).to(torch.int8) - 8
    return ints.flatten(1), scales


# Q4_K and Q6_K, read with torch too: bytes per super-block of 256 weights.
# Q4_K: float16 d and dmin, 12 bytes packing 8 six-bit scales sc and 8 six-bit minimums m,
# then 128 bytes of 4-bit q (32-byte chunks: 32 weights in the low nibbles, the next 32 in the
# high); weight i of group g is d·sc_g·q − dmin·m_g. Q6_K: 128 bytes of low nibbles, 64 of two
# high bits each, 16 int8 scales (one per 16 weights), float16 d; weight d·scale·(q − 32).
K_BLOCKS = {"Q4_K": 144, "Q6_K": 210}
K_BLOCK = 256
# The formats whose blocks go to PyTorch's int4 kernel as the file holds them (groups of 32).
KERNEL_FORMATS = ("Q4_0", "Q4_K", "Q8_0")  # Q8_0 in two halves: quantization.Int4Halves


def _q4_k_scales(raw: torch.Tensor):
    """[blocks × 144] bytes → d, dmin [blocks × 1] and sc, m [blocks × 8], as float32."""
    d = raw[:, 0:2].contiguous().view(torch.float16).float()
    dmin = raw[:, 2:4].contiguous().view(torch.float16).float()
    low, high, mixed = raw[:, 4:16].reshape(-1, 3, 4).unbind(1)  # [blocks × 4] each
    sc = torch.cat([low & 63, (mixed & 15) | ((low >> 2) & 48)], dim=1).float()
    m = torch.cat([high & 63, (mixed >> 4) | ((high >> 2) & 48)], dim=1).float()
    return d, dmin, sc, m


def _q4_k_ints(raw: torch.Tensor) -> torch.Tensor:
    """[blocks × 144] bytes → q [blocks × 8 × 32] as uint8 (0 … 15): each 32-byte chunk holds
    64 weights, the first 32 in its bytes' low four bits, the next 32 in their high four."""
    chunks = raw[:, 16:].reshape(-1, 4, 1, 32)
    return torch.cat([chunks & 15, chunks >> 4], dim=2).reshape(-1, 8, 32)


def _q4_k_parts(raw: torch.Tensor):
    """[blocks × 144] bytes → d, dmin [blocks × 1], sc, m [blocks × 8] as float32, and q
    [blocks × 8 × 32] as uint8."""
    return *_q4_k_scales(raw), _q4_k_ints(raw)


def _q4_k(raw: torch.Tensor) -> torch.Tensor:
    """[blocks × 144] bytes → [blocks × 256] float32, in gguf.quants' order of operations."""
    d, dmin, sc, m, q = _q4_k_parts(raw)
    return ((d * sc)[..., None] * q.float() - (dmin * m)[..., None]).reshape(-1, K_BLOCK)


def q4_k_scales_and_zeros(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K blocks as a file holds them, bytes [rows × K/256 × 144] → per group of 32 the int4
    kernel's scale d·sc and zero point [rows × K/32] (float32): the kernel's weight is
    (q − 8)·scale + zero, which is Q4_K's d·sc·q − dmin·m when zero = 8·scale − dmin·m."""
    d, dmin, sc, m = _q4_k_scales(blocks.reshape(-1, K_BLOCKS["Q4_K"]))
    scales, minimums = d * sc, dmin * m  # [blocks × 8]
    n_rows = blocks.shape[0]
    return scales.reshape(n_rows, -1), (8 * scales - minimums).reshape(n_rows, -1)


def q4_k_groups(blocks: torch.Tensor):
    """Q4_K blocks as a file holds them, bytes [rows × K/256 × 144] → what the int4 kernel
    takes: the integers q (0 … 15) as uint8 [rows × K], and per group of 32 a scale and a zero
    point (`q4_k_scales_and_zeros`)."""
    q = _q4_k_ints(blocks.reshape(-1, K_BLOCKS["Q4_K"]))
    return q.reshape(blocks.shape[0], -1), *q4_k_scales_and_zeros(blocks)


def _q6_k(raw: torch.Tensor) -> torch.Tensor:
    """[blocks × 210] bytes → [blocks × 256] float32, in gguf.quants' order of operations (the
    integers copied into float32 exactly, then scaled in place: no mixed-dtype product)."""
    n_blocks = raw.shape[0]
    low = raw[:, :128].reshape(n_blocks, 2, 1, 64)
    high = raw[:, 128:192].reshape(n_blocks, 2, 1, 32)
    scales = raw[:, 192:208].contiguous().view(torch.int8).float()  # [blocks × 16]
    d = raw[:, 208:210].contiguous().view(torch.float16).float()  # [blocks × 1]
    q = torch.empty((n_blocks, 2, 4, 32), dtype=torch.uint8)  # 6 bits: 4 low, then 2 high
    torch.bitwise_and(low, 15, out=q.view(n_blocks, 2, 2, 64)[:, :, :1])
    torch.bitwise_right_shift(low, 4, out=q.view(n_blocks, 2, 2, 64)[:, :, 1:])
    for i, shift in enumerate((0, 2, 4, 6)):
        q[:, :, i : i + 1] |= ((high >> shift) & 3) << 4
    out = torch.empty((n_blocks, K_BLOCK))
    out.copy_(q.view(torch.int8).sub_(32).view(n_blocks, K_BLOCK))  # exact in float32
    out.view(n_blocks, 16, 16).mul_((d * scales)[..., None])
    return out


def dequantize(kind: str, data) -> torch.Tensor:
    """Rows of Q8_0, Q4_0, Q4_K or Q6_K blocks as float32, as gguf.quants gives them (bit for
    bit)."""
    if kind in K_BLOCKS:
        raw = torch.as_tensor(np.asarray(data)).reshape(-1, K_BLOCKS[kind])
        blocks = _q4_k(raw) if kind == "Q4_K" else _q6_k(raw)
        return blocks.reshape(len(data), -1)
    ints, scales = ints_and_scales(kind, data)
    return (ints.float().unflatten(1, (-1, BLOCK)) * scales[..., None]).flatten(1)


def dequantize_rows(kind: str, tensor, rows) -> torch.Tensor:
    """Rows of a block-format matrix (the file's bytes, one row of blocks each) in float32:
    Q8_0, Q4_0, Q4_K and Q6_K with torch, the other formats with gguf.quants."""
    if kind in TORCH_BLOCKS or kind in K_BLOCKS:
        return dequantize(kind, rows)
    return torch.from_numpy(gguf.quants.dequantize(rows, tensor.tensor_type))


class BlockMatrix:
    """A block-format matrix of the file `[rows × columns]`, dequantized to float32 when used.

    Indexing rows (`table[token_ids]`: the embedding's lookup; `w[:1024]`, a range of rows)
    dequantizes those rows only, so a prompt's few tokens never cost the whole table (2.1 GB in
    float32 for the 8B); any other use, a tensor method or a torch function, sees the whole
    matrix, dequantized for it."""

    dtype = torch.float32

    def __init__(self, kind: str, tensor, shape: tuple[int, int]):
        self.kind, self.tensor, self.shape = kind, tensor, torch.Size(shape)
        self.blocks = np.asarray(tensor.data).reshape(shape[0], -1)  # memory-mapped bytes

    # Weights dequantized at a time into another dtype (`dequantized`): a float32 copy of a
    # block of rows, never of the whole matrix (the 8B's output matrix: 2.1 GB). 8 MB, which the
    # heap reuses: 4,096 rows' (up to 240 MB) took fresh pages at every block, twice as slow.
    WEIGHTS_AT_A_TIME = 2**21

    def full(self) -> torch.Tensor:
        return dequantize_rows(self.kind, self.tensor, self.blocks).reshape(self.shape)

    def dequantized(self, dtype: torch.dtype, device="cpu") -> torch.Tensor:
        """The whole matrix in `dtype` on `device`, dequantized a block of rows at a time."""
        out = torch.empty(self.shape, dtype=dtype, device=device)
        at_a_time = max(1, self.WEIGHTS_AT_A_TIME // self.shape[1])
        for start in range(0, self.shape[0], at_a_time):
            rows = self.blocks[start : start + at_a_time]
            out[start : start + len(rows)] = dequantize_rows(self.kind, self.tensor, rows)
        return out

    def __getitem__(self, index):
        if isinstance(index, tuple) and index and isinstance(index[0], slice):
            return self[index[0]][(slice(None), *index[1:])]  # the rows first, then the rest
        if isinstance(index, slice):  # a range of rows (`w[:1024]`): those rows only
            rows = self.blocks[index]
            if len(rows) == 0:
                return torch.empty((0, self.shape[1]), dtype=self.dtype)
            return dequantize_rows(self.kind, self.tensor, rows).reshape(len(rows), -1)
        if isinstance(index, tuple) or index is Ellipsis:
            return self.full()[index]
        rows = np.asarray(index.cpu() if torch.is_tensor(index) else index)
        if rows.dtype == np.bool_ or not np.issubdtype(rows.dtype, np.integer):
            return self.full()[index]
        values = dequantize_rows(self.kind, self.tensor, self.blocks[rows.reshape(-1)])
        return values.reshape(*rows.shape, self.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        return 2

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.full(), name)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        def whole(value):
            return value.full() if isinstance(value, BlockMatrix) else value

        args, kwargs = tree_map(whole, args), tree_map(whole, kwargs or {})
        return func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"BlockMatrix({self.kind}, shape {list(self.shape)}, dequantized when used)"


_readers: dict[tuple[str, int, int], gguf.GGUFReader] = {}


class PlainSlices(gguf.GGUFReader):
    """gguf's reader, each read a slice of a plain array over its memory map. gguf slices the
    `numpy.memmap` itself, and each slice of a memmap runs numpy's bookkeeping for one: an
    Ollama file's 128,256 tokens and 280,147 merges took 8.9 s to open on 2 cores, 6 s of it
    that bookkeeping (2026-12-06). The bytes, and what is read from them, are the same; arrays
    of strings are read in one loop (`_string_array`)."""

    def _get(self, offset, dtype, count=1, override_order=None):
        if self.__dict__.get("_mapped") is not self.data:  # the map gguf made, seen once
            self._mapped, self._plain = self.data, self.data.view(np.ndarray)
        count = int(count)
        end = offset + np.dtype(dtype).itemsize * count
        values = self._plain[offset:end].view(dtype=dtype)[:count]
        order = self.byte_order if override_order is None else override_order
        return values.view(values.dtype.newbyteorder(order))

    def _get_field_parts(self, orig_offs, raw_type):
        if raw_type == gguf.GGUFValueType.ARRAY:
            item_type = self._get(orig_offs, np.uint32)
            if int(item_type[0]) == gguf.GGUFValueType.STRING:
                return self._string_array(orig_offs, item_type)
        return super()._get_field_parts(orig_offs, raw_type)

    def _string_array(self, offset: int, item_type: np.ndarray):
        """An array of strings (the vocabulary, its merges), in one loop: the same parts, data
        and types as gguf's own reader makes, which calls itself for each string. 2.0–2.3 s →
        0.4–0.5 s for an Ollama file's 128,256 tokens and 280,147 merges (2026-12-06). A length
        past the file's end makes the next read fail, as in gguf's reader."""
        count = self._get(offset + 4, np.uint64)
        parts, data = [item_type, count], []
        plain, at = self._plain, offset + 12
        length_type = np.dtype(np.uint64).newbyteorder(self.byte_order)
        for _ in range(int(count[0])):
            length = plain[at : at + 8].view(length_type)  # fewer than 8 bytes left: ValueError
            size = int(length[0])
            parts += [length, plain[at + 8 : at + 8 + size]]
            data.append(len(parts) - 1)
            at += 8 + size
        return at - offset, parts, data, [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING]


def open_gguf(path: Path) -> gguf.GGUFReader:
    """gguf's reader on the file, memory-mapped copy-on-write (the file itself is never
    written), opened once per process: parsing a 128,256-token vocabulary takes seconds."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _readers:
        return _readers[key]
    fix = "it is truncated or damaged; download it again"
    with open(path, "rb") as file:
        if file.read(4) != GGUF_MAGIC:
            raise CheckpointError(
                f"{path} does not start with GGUF's magic bytes, so it is not a GGUF file (an "
                "unfinished download or another format): download it again."
            )
    try:
        reader = PlainSlices(path, "c")
    except Exception as error:  # gguf raises ValueError, IndexError … depending on the damage
        text = str(error).splitlines()[0][:100] if str(error) else type(error).__name__
        raise CheckpointError(f"{path} is not a readable GGUF file ({text}): {fix}.") from None
    ends = [t.data_offset + t.n_bytes for t in reader.tensors]
    if ends and max(ends) > stat.st_size:
        raise CheckpointError(f"{path} is shorter than its tensors need: {fix}.")
    _readers[key] = reader
    return reader


def forget(path: Path) -> None:
    """Drop the readers opened on `path` (a file replaced under the same name)."""
    resolved = str(Path(path).resolve())
    for key in [key for key in _readers if key[0] == resolved]:
        del _readers[key]


def field(reader: gguf.GGUFReader, key: str):
    """A metadata value (a number, a string, or a list), or None."""
    found = reader.get_field(key)
    return None if found is None else contents(reader, found, key)


def contents(reader: gguf.GGUFReader, found, key: str):
    """A field's value; text that is not UTF-8 (a damaged file) is one sentence."""
    try:
        return found.contents()
    except UnicodeDecodeError:
        raise CheckpointError(
            f"{reader.data.filename}: its metadata {key} holds text that is not UTF-8, so the "
            "file is damaged: download it again."
        ) from None


SPELLING = METADATA_KEYS | OPTIONAL_KEYS  # for messages: the metadata's name for each key


def tokenizer_source(path: Path) -> TokenizerSource:
    """A GGUF file holds its vocabulary in its metadata (read by `vocabulary`)."""
    return TokenizerSource("gguf", Path(path))


def sizes_path(path: Path) -> Path:
    """The file that states the sizes: the GGUF file itself."""
    return Path(path)


def is_llama4(path: Path) -> bool:
    """Whether the file holds a Llama 4 (general.architecture); a damaged file is read_params'
    to name."""
    try:
        return field(open_gguf(path), "general.architecture") == "llama4"
    except CheckpointError:
        return False


def read_params(path: Path, llama4: bool = False) -> dict:
    """The metadata as params.json's keys, as hf_checkpoint does for config.json: sizes and
    `ffn_hidden`, `tied_output`, and Llama 3.1's RoPE scaling as the rope_freqs tensor states
    it, checked to be Llama 3.1's rule. A Llama 4's only where `llama4` says the caller
    teaches it (the notebook's last section): `llama4_params` adds its own keys."""
    reader = open_gguf(path)
    architecture = field(reader, "general.architecture")
    if architecture == "llama4" and not llama4:
        raise CheckpointError(
            f"{path} holds a Llama 4 (general.architecture llama4): it adds "
            f"{release_facts.NOT_TAUGHT['llama4']}, which only the notebook's last section runs."
        )
    if llama4 and architecture != "llama4":
        raise CheckpointError(f"{path} is not a Llama 4 model's: it holds {architecture!r}.")
    if architecture not in (*ARCHITECTURES, "llama4"):
        adds = release_facts.NOT_TAUGHT.get(architecture) if isinstance(architecture, str) else None
        why = f" ({architecture} adds {adds}, which it does not teach)" if adds else ""
        raise CheckpointError(
            f"{path} holds a {architecture or 'unnamed'} model (general.architecture), not "
            f"llama or qwen3: this notebook runs Llama 3 and Qwen3 models only{why}; use a "
            "Llama 3 or Qwen3 GGUF file."
        )
    prefix = f"{architecture}."
    params = {}
    for key, name in METADATA_KEYS.items():
        name = name.replace("llama.", prefix, 1)
        value = field(reader, name)
        if value is None:
            raise CheckpointError(
                f"{path} states no {name} in its metadata: it is not a complete "
                f"{'Llama 4' if architecture == 'llama4' else 'Llama 3'} GGUF file; download it "
                "again, or convert it with a recent llama.cpp."
            )
        params[key] = value
    for key in ("rope_theta", "norm_eps"):  # stored as float32: 1e-05, not 9.99999974e-06
        if isinstance(params[key], (int, float)):
            params[key] = float(f"{params[key]:.7g}")
    optional = {key: name.replace("llama.", prefix, 1) for key, name in OPTIONAL_KEYS.items()}
    if field(reader, optional["n_kv_heads"]):  # else one per query head (model_sizes)
        params["n_kv_heads"] = field(reader, optional["n_kv_heads"])
    tokens = reader.get_field("tokenizer.ggml.tokens")
    params["vocab_size"] = field(reader, optional["vocab_size"]) or (
        len(tokens.data) if tokens is not None else 0
    )
    if architecture == "qwen3":  # its head width, and a norm on each query and key head
        head_dim = field(reader, f"{prefix}attention.key_length")
        if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim <= 0:
            raise CheckpointError(
                f"{path} states no {prefix}attention.key_length, the head width every Qwen3 "
                "GGUF file states: convert it again with a recent llama.cpp."
            )
        params["head_dim"], params["qk_norm"] = head_dim, True
    stated_context = field(reader, f"{prefix}context_length")
    if isinstance(stated_context, int) and stated_context > 0:
        params["context_length"] = stated_context
    names = {t.name for t in reader.tensors}
    params["tied_output"] = "output.weight" not in names
    params["use_scaled_rope"] = ROPE_FACTORS in names
    if architecture == "llama4":
        params |= llama4_params(reader, path)
    if ROPE_FACTORS in names:
        stored = np.array(tensor_by_name(reader)[ROPE_FACTORS].data, dtype=np.float32).ravel()
        params["rope_scaling"] = rope_scaling(stored)
        if architecture == "llama4":  # Llama 4's band: the factors 1 and 1 (model_sizes)
            band = model_sizes.llama4_rope_scaling({"rope_scaling_factor": float(stored.max())})
            params["rope_scaling"] |= band
        checkpoint_checks.check_pair_factors(params, stored.tolist(), path, ROPE_FACTORS)
    return params


# A Llama 4 file's own keys: params.json's name for each, and its moe_args'. Ollama's converter
# writes an expert's width as intermediate_size_moe, a dense layer's as intermediate_size (its
# feed_forward_length is then an expert's), and states use_qk_norm (facts: its
# convert/convert_llama4.go); llama.cpp's, expert_feed_forward_length and feed_forward_length.
LLAMA4_KEYS = {"expert_hidden": "llama4.expert_feed_forward_length"}
OLLAMA_LLAMA4_KEYS = {
    "expert_hidden": "llama4.intermediate_size_moe",
    "ffn_hidden": "llama4.intermediate_size",
}
LLAMA4_MOE_KEYS = {
    "num_experts": "llama4.expert_count",
    "top_k": "llama4.expert_used_count",
    "interleave_moe_layer_step": "llama4.interleave_moe_layer_step",
}


def llama4_params(reader: gguf.GGUFReader, path: Path) -> dict:
    """What a Llama 4 GGUF file states beyond Llama 3's keys (an expert's width, the experts,
    how many each token goes to, which layers hold them), and what llama.cpp assumes of every
    such file (release_facts.LLAMA_CPP_LLAMA4): the chunks, the layers without RoPE, their
    temperature and the norm on queries and keys (unless the file states it, as Ollama's
    does). An Ollama file's widths are read under its own names."""
    stated = {}
    ollama = field(reader, OLLAMA_LLAMA4_KEYS["expert_hidden"]) is not None
    for key, name in ((OLLAMA_LLAMA4_KEYS if ollama else LLAMA4_KEYS) | LLAMA4_MOE_KEYS).items():
        value = field(reader, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CheckpointError(
                f"{path} states {value!r} as {name}, where every Llama 4 GGUF file states a "
                "positive integer: download it again, or convert it with a recent llama.cpp."
            )
        stated[key] = value
    facts = release_facts.LLAMA_CPP_LLAMA4
    window = field(reader, "llama4.attention.sliding_window")
    step = field(reader, "llama4.attention.sliding_window_pattern")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step <= 0):
        raise CheckpointError(
            f"{path} states {step!r} as llama4.attention.sliding_window_pattern, not a step of "
            "layers (every n-th without RoPE), the only pattern Meta's Llama 4 has."
        )
    chunked = window != 0  # 0: llama.cpp's Llama 4 without chunks, with RoPE everywhere
    moe_args = {key: stated.pop(key) for key in LLAMA4_MOE_KEYS}
    qk_norm = field(reader, "llama4.use_qk_norm")
    if not isinstance(qk_norm, bool):  # llama.cpp's rule where the file does not say
        qk_norm = moe_args["num_experts"] != facts["experts_without_qk_norm"]
    return stated | {
        "moe_args": moe_args,
        "attention_chunk_size": facts["attention_chunk_size"] if chunked else None,
        "nope_layer_interval": (step or facts["nope_layer_interval"]) if chunked else None,
        "use_qk_norm": qk_norm,
        "attn_temperature_tuning": facts["attn_temperature_tuning"] and chunked,
        "floor_scale": facts["floor_scale"],
        "attn_scale": facts["attn_scale"],
    }


def rope_scaling(stored: np.ndarray) -> dict:
    """Llama 3.1's scaled RoPE as the file states it: the factor is the largest of the
    per-pair factors llama.cpp's converter stored.

    The converter computes the pair factors from the four numbers of config.json's
    rope_scaling and keeps only the result; the other three are the same in every release
    (release_facts). checkpoint_checks checks that the stored factors are exactly what
    these give; the notebook computes the frequencies.
    """
    return {
        "factor": float(stored.max()),
        "low_freq_factor": release_facts.ROPE_LOW_FREQ_FACTOR,
        "high_freq_factor": release_facts.ROPE_HIGH_FREQ_FACTOR,
        "original_max_position_embeddings": release_facts.ROPE_ORIGINAL_CONTEXT,
        "stated_in": f"the GGUF file's {ROPE_FACTORS}",
    }


def tensor_by_name(reader: gguf.GGUFReader) -> dict:
    return {t.name: t for t in reader.tensors}


def format_name(tensor) -> str:
    return gguf.GGMLQuantizationType(tensor.tensor_type).name


# A Llama 4 file's tensors that Llama 3's table does not name: llama.cpp's name → Meta's. Those
# in SWAPPED are stored with their last two axes swapped: the router [experts × dim], an expert
# matrix [experts × out × in], where Meta's are [dim × experts] and [experts × in × out].
LLAMA4_TENSORS = {
    "ffn_gate_inp.weight": "feed_forward.router_DE",
    "ffn_gate_exps.weight": "feed_forward.experts.w1",
    "ffn_up_exps.weight": "feed_forward.experts.w3",
    "ffn_down_exps.weight": "feed_forward.experts.w2",
    "ffn_gate_shexp.weight": "feed_forward.shared_expert.w1.weight",
    "ffn_up_shexp.weight": "feed_forward.shared_expert.w3.weight",
    "ffn_down_shexp.weight": "feed_forward.shared_expert.w2.weight",
}
SWAPPED = {"ffn_gate_inp.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight"}
SWAPPED |= {"ffn_down_exps.weight"}


def swap_last_axes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.transpose(-1, -2)


def meta_name(name: str) -> tuple[str, str]:
    """A GGUF tensor's name → (Meta's name, "T" where its last two axes are swapped, else "")."""
    parts = name.split(".", 2)
    if parts[0] == "blk" and len(parts) == 3 and parts[2] in LLAMA4_TENSORS:
        swapped = "T" if parts[2] in SWAPPED else ""
        return f"layers.{parts[1]}.{LLAMA4_TENSORS[parts[2]]}", swapped
    return tensor_names.GGUF.to_meta(name), ""


class GGUFWeights(NamedWeights):
    """A GGUF file's tensors under Meta's names, read when looked up.

    F32, F16 and BF16 come straight from the memory-mapped file, with no copy. A block-format
    matrix is a `BlockMatrix`, dequantized into float32 when used (Q8_0, Q4_0, Q4_K and Q6_K
    with torch, the others by `gguf.quants`); the notebook's weight reader keeps it once
    dequantized. Q4_0's and Q4_K's go to the int4 kernel as they are instead
    (`kernel_ready`, `block_rows`: quantization.from_file_blocks).
    """

    source = "the GGUF metadata"
    files = "its tensors"

    def __init__(self, path: Path, params: dict):
        self.path = Path(path)
        reader = open_gguf(self.path)
        named = {  # not Ollama's Llama 4 image side (v.…, mm.…), which the file holds too
            t.name: meta_name(t.name)
            for t in reader.tensors
            if t.name != ROPE_FACTORS and not t.name.startswith(("v.", "mm."))
        }
        self.tensors = {named[t.name][0]: t for t in reader.tensors if t.name in named}
        swapped = {meta for meta, how in named.values() if how == "T"}  # Llama 4's
        self.stored_shapes = {  # numpy's order: the reverse of ggml's
            name: tuple(int(n) for n in reversed(t.shape.tolist()))
            for name, t in self.tensors.items()
        }
        self.shapes = {
            name: (*shape[:-2], shape[-1], shape[-2]) if name in swapped else shape
            for name, shape in self.stored_shapes.items()
        }
        self.formats = {name: format_name(t) for name, t in self.tensors.items()}
        unread = sorted({f for f in self.formats.values() if f not in FORMATS})
        if unread:
            name = next(n for n, f in self.formats.items() if f == unread[0])
            raise CheckpointError(
                f"{self.path}: {self.describe(name)} is stored as {unread[0]}, a format this "
                "notebook does not read: use a file in F32, F16, BF16 or one of llama.cpp's "
                "block formats (Q8_0, Q4_0, Q4_K_M …, as Ollama and LM Studio download them)."
            )
        self.dtypes = {name: FORMATS[f] for name, f in self.formats.items()}
        # The tensors stored in another order than Meta's, each with what puts it back:
        # Qwen3's q/k rows (Hugging Face's order) and Llama 4's router and experts (axes swapped)
        self.reorder = {name: swap_last_axes for name in swapped}
        if field(reader, "general.architecture") == "qwen3":
            heads = hf_checkpoint.rotate_half_rows(self.shapes, params)
            self.reorder |= {
                name: lambda tensor, n=n: hf_checkpoint.hf_rows_to_meta(tensor, n)
                for name, n in heads.items()
            }

    def describe(self, name: str) -> str:
        original = self.tensors[name].name if name in self.tensors else name
        return f"{original} (Meta's {name})" if original != name else name

    def note(self) -> str:
        formats = sorted(set(self.formats.values()), key=list(FORMATS).index)
        note = f" as read, GGUF file ({'/'.join(formats)})"
        routes = [
            f"{kind} to the int4 kernel {'in two halves' if kind == 'Q8_0' else 'as stored'}"
            if kind in KERNEL_FORMATS
            else f"{kind} dequantized when used"
            for kind in formats
            if kind in BLOCK_FORMATS
        ]
        return note + "".join(f"; {route}" for route in routes)

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor = self._as_stored(name)
        if name not in self.reorder:
            return tensor
        tensor = tensor.full() if isinstance(tensor, BlockMatrix) else tensor
        return self.reorder[name](tensor)  # in Meta's order

    def _as_stored(self, name: str) -> torch.Tensor:
        tensor = self.tensors[name]
        kind = self.formats[name]
        if kind in ("F32", "F16"):
            return torch.from_numpy(tensor.data)
        shape = self.stored_shapes[name]
        if kind == "BF16":  # gguf hands it out as bytes
            return torch.from_numpy(tensor.data).view(torch.bfloat16).reshape(shape)
        if len(shape) == 2:
            return BlockMatrix(kind, tensor, shape)
        # Llama 4's experts [experts × rows × columns]: all their rows, as one matrix's (with
        # torch where dequantize_rows can: gguf's numpy took 1.5–4× as long)
        rows = np.asarray(tensor.data).reshape(math.prod(shape[:-1]), -1)
        return dequantize_rows(kind, tensor, rows).reshape(shape)

    def block_rows(self, name: str, rows: int) -> Iterator[torch.Tensor]:
        """A Q4_0 or Q4_K matrix's blocks as the file holds them, `rows` rows at a time: bytes
        [rows × blocks × bytes per block], memory-mapped (what PyTorch's int4 kernel takes:
        groups of 32 integers with a scale each, and for Q4_K a zero point, in another
        layout)."""
        kind = self.formats[name]
        size = TORCH_BLOCKS[kind] if kind in TORCH_BLOCKS else K_BLOCKS[kind]
        data = np.asarray(self.tensors[name].data).reshape(self.shapes[name][0], -1)
        for start in range(0, len(data), rows):
            yield torch.as_tensor(data[start : start + rows]).unflatten(1, (-1, size))

    @property
    def kernel_ready(self) -> list[str]:
        """The matrices whose blocks PyTorch's int4 kernel takes as they are: Q4_0's and
        Q4_K's."""
        return [
            name
            for name, kind in self.formats.items()
            if kind in KERNEL_FORMATS and name not in self.reorder  # stored in Meta's order
        ]


def weights(path: Path, params: dict) -> NamedWeights:
    """The file's tensors by Meta's names, read (and dequantized) when looked up."""
    return GGUFWeights(path, params)


def vocabulary_details(path: Path) -> tuple:
    """The tokenizer in the metadata: its kind ("gpt2": byte-level BPE), every token's text and
    type by id, the merges, and the split pattern's name ("llama-bpe": Llama 3's, "qwen2")."""
    reader = open_gguf(path)
    kind, tokens = vocabulary(path)
    types, merges, pre = (
        field(reader, key)
        for key in ("tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.pre")
    )
    return kind, tokens, types, merges, pre


def vocabulary(path: Path) -> tuple[str | None, list[str]]:
    """The tokenizer in the metadata: its kind (Llama 3's is "gpt2", byte-level BPE) and
    every token's text, by id."""
    reader = open_gguf(path)
    tokens = reader.get_field("tokenizer.ggml.tokens")
    listed = contents(reader, tokens, "tokenizer.ggml.tokens") if tokens else []
    return field(reader, "tokenizer.ggml.model"), listed
