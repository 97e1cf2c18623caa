"""Read a GGUF file (llama.cpp's format, which Ollama and LM Studio download) as if it were
Meta's layout — plumbing only.

One file holds everything: the sizes as metadata (`llama.block_count`, …), the tokenizer's
vocabulary, and every tensor, memory-mapped by the `gguf` package (ggml's own reader).
`metadata_params` turns the metadata into params.json's keys; `GGUFWeights` hands out the
tensors under Meta's names, one at a time. llama.cpp's converter already put the q and k
rows back in Meta's order (its `permute()` undoes Hugging Face's), so no row moves here.
Blocks of Q8_0, Q4_0, Q4_K, Q6_K and llama.cpp's other block formats are dequantized by
`gguf.quants` when a tensor is read.

An Ollama model name (`llama3.2:1b`) is looked up in Ollama's models folder: its manifest
names the GGUF blob, read where it lies.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import gguf
import numpy as np
import torch

from plumbing import release_facts
from plumbing.friendly_errors import CheckpointError

MAGIC = b"GGUF"

# Meta's tensor names → llama.cpp's ({i}: the layer).
GGUF_NAMES = {
    "tok_embeddings.weight": "token_embd.weight",
    "layers.{i}.attention_norm.weight": "blk.{i}.attn_norm.weight",
    "layers.{i}.attention.wq.weight": "blk.{i}.attn_q.weight",
    "layers.{i}.attention.wk.weight": "blk.{i}.attn_k.weight",
    "layers.{i}.attention.wv.weight": "blk.{i}.attn_v.weight",
    "layers.{i}.attention.wo.weight": "blk.{i}.attn_output.weight",
    "layers.{i}.ffn_norm.weight": "blk.{i}.ffn_norm.weight",
    "layers.{i}.feed_forward.w1.weight": "blk.{i}.ffn_gate.weight",
    "layers.{i}.feed_forward.w3.weight": "blk.{i}.ffn_up.weight",
    "layers.{i}.feed_forward.w2.weight": "blk.{i}.ffn_down.weight",
    "norm.weight": "output_norm.weight",
    "output.weight": "output.weight",
}
_META_NAMES = {
    re.compile(re.escape(name).replace(r"\{i\}", r"(\d+)") + "$"): meta
    for meta, name in GGUF_NAMES.items()
}
ROPE_FACTORS = "rope_freqs.weight"  # Llama 3.1+: one factor per RoPE pair (see below)

# params.json's keys from the metadata ({arch}: general.architecture, "llama").
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


def is_gguf(path: Path) -> bool:
    """A file that starts with GGUF's magic bytes (or is named .gguf: then it is checked)."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() == ".gguf":
        return True
    with open(path, "rb") as file:
        return file.read(4) == MAGIC


_readers: dict[tuple[str, int, int], gguf.GGUFReader] = {}


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
        if file.read(4) != MAGIC:
            raise CheckpointError(
                f"{path} does not start with GGUF's magic bytes, so it is not a GGUF file (an "
                "unfinished download or another format): download it again."
            )
    try:
        reader = gguf.GGUFReader(path, "c")
    except Exception as error:  # gguf raises ValueError, IndexError … depending on the damage
        text = str(error).splitlines()[0][:100] if str(error) else type(error).__name__
        raise CheckpointError(f"{path} is not a readable GGUF file ({text}): {fix}.") from None
    ends = [t.data_offset + t.n_bytes for t in reader.tensors]
    if ends and max(ends) > stat.st_size:
        raise CheckpointError(f"{path} is shorter than its tensors need: {fix}.")
    _readers[key] = reader
    return reader


def field(reader: gguf.GGUFReader, key: str):
    """A metadata value (a number, a string, or a list), or None."""
    found = reader.get_field(key)
    return None if found is None else found.contents()


def meta_name(name: str) -> str:
    """Meta's name for a llama.cpp tensor name (unknown names come back unchanged)."""
    for pattern, meta in _META_NAMES.items():
        match = pattern.match(name)
        if match:
            return meta.replace("{i}", match.group(1)) if match.groups() else meta
    return name


def metadata_params(path: Path) -> dict:
    """The metadata as params.json's keys, as read_config does for config.json: sizes and
    `ffn_hidden`, `tied_output`, and Llama 3.1's RoPE scaling from the rope_freqs tensor."""
    reader = open_gguf(path)
    architecture = field(reader, "general.architecture")
    if architecture != "llama":
        raise CheckpointError(
            f"{path} holds a {architecture or 'unnamed'} model (general.architecture), not "
            "llama: this notebook runs Llama 3 models only; use a Llama 3 GGUF file."
        )
    params = {}
    for key, name in METADATA_KEYS.items():
        value = field(reader, name)
        if value is None:
            raise CheckpointError(
                f"{path} states no {name} in its metadata: it is not a complete Llama 3 GGUF "
                "file; download it again, or convert it with a recent llama.cpp."
            )
        params[key] = value
    for key in ("rope_theta", "norm_eps"):  # stored as float32: 1e-05, not 9.99999974e-06
        if isinstance(params[key], (int, float)):
            params[key] = float(f"{params[key]:.7g}")
    params["n_kv_heads"] = field(reader, OPTIONAL_KEYS["n_kv_heads"]) or params["n_heads"]
    tokens = reader.get_field("tokenizer.ggml.tokens")
    params["vocab_size"] = field(reader, OPTIONAL_KEYS["vocab_size"]) or (
        len(tokens.data) if tokens is not None else 0
    )
    names = {t.name for t in reader.tensors}
    params["tied_output"] = "output.weight" not in names
    params["use_scaled_rope"] = ROPE_FACTORS in names
    if ROPE_FACTORS in names:
        params["rope_scaling"] = rope_scaling(path, reader, params)
    return params


def rope_scaling(path: Path, reader: gguf.GGUFReader, params: dict) -> dict:
    """Llama 3.1's scaled RoPE, from the per-pair factors llama.cpp's converter stored.

    The converter computes them from the four numbers of config.json's rope_scaling and keeps
    only the result. The largest factor is the factor itself; the other three are the same in
    every release (release_facts), and the stored factors must be exactly what they give.
    """
    stored = torch.from_numpy(np.array(tensor_by_name(reader)[ROPE_FACTORS].data)).float()
    factor = float(stored.max())
    low, high = release_facts.ROPE_LOW_FREQ_FACTOR, release_facts.ROPE_HIGH_FREQ_FACTOR
    original = release_facts.ROPE_ORIGINAL_CONTEXT
    head_dim = params["dim"] // params["n_heads"]
    frequencies = 1.0 / params["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim)
    wavelengths = 2 * math.pi / frequencies
    smooth = (original / wavelengths - low) / (high - low)
    expected = torch.where(
        wavelengths < original / high,
        1.0,
        torch.where(wavelengths > original / low, factor, 1 / ((1 - smooth) / factor + smooth)),
    )
    if stored.shape != expected.shape or not torch.allclose(stored, expected, rtol=1e-5):
        raise CheckpointError(
            f"{path}: its {ROPE_FACTORS} are not Llama 3.1's RoPE scaling (factor {factor:g}, "
            f"low/high frequency factors {low:g}/{high:g}, original context {original}): this "
            "notebook implements only that rule; use a Llama 3 GGUF file."
        )
    return {
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": original,
        "stated_in": f"the GGUF file's {ROPE_FACTORS}",
    }


def tensor_by_name(reader: gguf.GGUFReader) -> dict:
    return {t.name: t for t in reader.tensors}


def format_name(tensor) -> str:
    return gguf.GGMLQuantizationType(tensor.tensor_type).name


class GGUFWeights(Mapping):
    """A GGUF file's tensors under Meta's names, read when looked up.

    F32, F16 and BF16 come straight from the memory-mapped file, with no copy. Block formats
    (Q8_0, Q4_0, the K-quants) are dequantized into float32 at each lookup by `gguf.quants`:
    LLAMA3_QUANTIZE=int4 on a Q4_0 file turns them once into the int4 kernel's own integers
    and scales instead (the same integers: Q4_0 is the rule the notebook's int4 follows).
    """

    config_name = "the GGUF metadata"
    files_name = "its tensors"

    def __init__(self, path: Path, params: dict):
        self.path = Path(path)
        reader = open_gguf(self.path)
        self.tensors = {meta_name(t.name): t for t in reader.tensors if t.name != ROPE_FACTORS}
        self.shapes = {
            name: tuple(int(n) for n in reversed(t.shape.tolist()))
            for name, t in self.tensors.items()
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

    def describe(self, name: str) -> str:
        original = self.tensors[name].name if name in self.tensors else name
        return f"{original} (Meta's {name})" if original != name else name

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor = self.tensors[name]
        kind = self.formats[name]
        if kind in ("F32", "F16"):
            return torch.from_numpy(tensor.data)
        if kind == "BF16":  # gguf hands it out as bytes
            return torch.from_numpy(tensor.data).view(torch.bfloat16).reshape(self.shapes[name])
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        return torch.from_numpy(values).reshape(self.shapes[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


def vocabulary(path: Path) -> tuple[str | None, list[str]]:
    """The tokenizer in the metadata: its kind (Llama 3's is "gpt2", byte-level BPE) and
    every token's text, by id."""
    reader = open_gguf(path)
    tokens = reader.get_field("tokenizer.ggml.tokens")
    return field(reader, "tokenizer.ggml.model"), tokens.contents() if tokens else []


# ---- Ollama ----------------------------------------------------------------------------------

OLLAMA_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?:[A-Za-z0-9._-]+$")
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"


def looks_like_ollama_name(value: str) -> bool:
    """`llama3.2:1b`, `library/llama3:8b`, `someone/model:tag`: a name and a tag, no path."""
    return bool(OLLAMA_NAME.match(value)) and not Path(value).expanduser().exists()


def ollama_models_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or "~/.ollama/models").expanduser()


def ollama_blob(name: str) -> Path:
    """The GGUF file of an Ollama model, in place: manifests/…/NAME/TAG names its blob."""
    models = ollama_models_dir()
    model, tag = name.rsplit(":", 1)
    namespace, model = model.split("/", 1) if "/" in model else ("library", model)
    manifest = models / "manifests" / "registry.ollama.ai" / namespace / model / tag
    if not manifest.is_file():
        raise CheckpointError(
            f"Ollama has no model {name} in {models} (OLLAMA_MODELS moves that folder): run "
            f"`ollama pull {name}`, or set LLAMA3_CKPT to a checkpoint path."
        )
    try:
        layers = json.loads(manifest.read_text())["layers"]
        digest = next(x["digest"] for x in layers if x.get("mediaType") == OLLAMA_MODEL_LAYER)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, StopIteration):
        raise CheckpointError(
            f"{manifest} is not an Ollama manifest that names a model file: run "
            f"`ollama pull {name}` again."
        ) from None
    blob = models / "blobs" / str(digest).replace(":", "-")
    if not blob.is_file():
        raise CheckpointError(
            f"Ollama's manifest for {name} names {blob.name}, which is not in {models / 'blobs'}: "
            f"run `ollama pull {name}` again."
        )
    return blob
