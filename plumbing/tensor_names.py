"""Every tensor's name in each layout, in one table — plumbing only.

The notebook asks for tensors by Meta's names (`layers.0.attention.wq.weight`). A Hugging
Face folder and a GGUF file hold the same tensors under their own names: `TENSOR_NAMES` lists
the three side by side, with one line on what each tensor is. `HUGGING_FACE` and `GGUF`
turn one name into the other (`to_meta`, `from_meta`); the table is inverted here, once.

`NamedWeights` is what every layout's reader hands out: a Mapping from Meta's names to
tensors, read when looked up, that also knows each tensor's shape, dtype and file name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import torch

# Meta's name, Hugging Face's, llama.cpp's, what the tensor is ({i}: the layer).
TENSOR_NAMES = [
    (
        "tok_embeddings.weight",
        "model.embed_tokens.weight",
        "token_embd.weight",
        "the embedding table: one row of dim numbers per token",
    ),
    (
        "layers.{i}.attention_norm.weight",
        "model.layers.{i}.input_layernorm.weight",
        "blk.{i}.attn_norm.weight",
        "RMSNorm's gains before attention",
    ),
    (
        "layers.{i}.attention.wq.weight",
        "model.layers.{i}.self_attn.q_proj.weight",
        "blk.{i}.attn_q.weight",
        "the query projection, every head's rows stacked",
    ),
    (
        "layers.{i}.attention.wk.weight",
        "model.layers.{i}.self_attn.k_proj.weight",
        "blk.{i}.attn_k.weight",
        "the key projection, one block of rows per key/value head",
    ),
    (
        "layers.{i}.attention.wv.weight",
        "model.layers.{i}.self_attn.v_proj.weight",
        "blk.{i}.attn_v.weight",
        "the value projection, one block of rows per key/value head",
    ),
    (
        "layers.{i}.attention.wo.weight",
        "model.layers.{i}.self_attn.o_proj.weight",
        "blk.{i}.attn_output.weight",
        "attention's output projection: the heads, mixed back into dim",
    ),
    (
        "layers.{i}.ffn_norm.weight",
        "model.layers.{i}.post_attention_layernorm.weight",
        "blk.{i}.ffn_norm.weight",
        "RMSNorm's gains before the feed-forward",
    ),
    (
        "layers.{i}.feed_forward.w1.weight",
        "model.layers.{i}.mlp.gate_proj.weight",
        "blk.{i}.ffn_gate.weight",
        "SwiGLU's gate: dim → ffn_hidden, through SiLU",
    ),
    (
        "layers.{i}.feed_forward.w3.weight",
        "model.layers.{i}.mlp.up_proj.weight",
        "blk.{i}.ffn_up.weight",
        "SwiGLU's up projection: dim → ffn_hidden, times the gate",
    ),
    (
        "layers.{i}.feed_forward.w2.weight",
        "model.layers.{i}.mlp.down_proj.weight",
        "blk.{i}.ffn_down.weight",
        "SwiGLU's down projection: ffn_hidden → dim",
    ),
    (
        "layers.{i}.attention.q_norm.weight",
        "model.layers.{i}.self_attn.q_norm.weight",
        "blk.{i}.attn_q_norm.weight",
        "Qwen3's RMSNorm gains for every query head, before RoPE (Llama 3 has none)",
    ),
    (
        "layers.{i}.attention.k_norm.weight",
        "model.layers.{i}.self_attn.k_norm.weight",
        "blk.{i}.attn_k_norm.weight",
        "Qwen3's RMSNorm gains for every key head, before RoPE (Llama 3 has none)",
    ),
    ("norm.weight", "model.norm.weight", "output_norm.weight", "RMSNorm's gains after the layers"),
    (
        "output.weight",
        "lm_head.weight",
        "output.weight",
        "the output projection: one row of scores per token (absent when tied)",
    ),
]

# How Meta's model-parallel shards (70B: 8 files) split each tensor: the axis to
# concatenate along, or None for tensors every shard holds a copy of (facts).
SHARD_AXIS = {
    "tok_embeddings.weight": 0,
    "output.weight": 0,
    "attention.wq.weight": 0,
    "attention.wk.weight": 0,
    "attention.wv.weight": 0,
    "attention.wo.weight": 1,
    "feed_forward.w1.weight": 0,
    "feed_forward.w3.weight": 0,
    "feed_forward.w2.weight": 1,
    "attention_norm.weight": None,
    "ffn_norm.weight": None,
    "attention.q_norm.weight": None,
    "attention.k_norm.weight": None,
    "norm.weight": None,
}


ABOUT = {meta: line for meta, _, _, line in TENSOR_NAMES}


def _generic(name: str) -> tuple[str, str | None]:
    """`layers.3.attention.wq.weight` → (`layers.{i}.attention.wq.weight`, "3")."""
    layer = re.match(r"layers\.(\d+)\.(.*)$", name)
    return ("layers.{i}." + layer.group(2), layer.group(1)) if layer else (name, None)


class NameMap:
    """One layout's names for Meta's, both ways: the table's column, inverted once here."""

    def __init__(self, column: int):
        self.names = {row[0]: row[column] for row in TENSOR_NAMES}  # Meta's → this layout's
        self._to_meta = [
            (re.compile(re.escape(name).replace(r"\{i\}", r"(\d+)") + "$"), meta)
            for meta, name in self.names.items()
        ]

    def to_meta(self, name: str) -> str:
        """Meta's name for a tensor named in this layout (unknown names come back unchanged)."""
        for pattern, meta in self._to_meta:
            match = pattern.match(name)
            if match:
                return meta.replace("{i}", match.group(1)) if match.groups() else meta
        return name

    def from_meta(self, meta: str) -> str:
        """This layout's name for a tensor named as in Meta's (KeyError if Llama has none)."""
        generic, layer = _generic(meta)
        return self.names[generic].replace("{i}", layer) if layer else self.names[generic]


HUGGING_FACE = NameMap(1)
GGUF = NameMap(2)


def about(meta: str) -> str:
    """One line on what a tensor of Meta's layout is ("" for a name Llama 3 does not have)."""
    generic, layer = _generic(meta)
    line = ABOUT.get(generic, "")
    return f"{line} (layer {layer})" if line and layer is not None else line


class NamedWeights(Mapping):
    """A checkpoint's tensors under Meta's names, each read when looked up.

    Every layout's reader is one: `shapes` and `dtypes` come from the files' indexes (no
    tensor read), `describe(name)` gives the file's own name beside Meta's, `about(name)` a
    line on what the tensor is. `source` names where the sizes came from and `files` the
    files the tensors came from (for messages); `note()` ends the checked summary.
    """

    source = "params.json"
    files = "consolidated.00.pth"
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, torch.dtype]

    def describe(self, name: str) -> str:
        return name

    def about(self, name: str) -> str:
        return about(name)

    def note(self) -> str:
        return ""

    def __iter__(self) -> Iterator[str]:  # Meta's names, in the order of the files
        return iter(self.shapes)

    def __contains__(self, name) -> bool:  # from the index: Mapping's own would read the tensor
        return name in self.shapes

    def __len__(self) -> int:
        return len(self.shapes)


def tensor_shapes(weights: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Every tensor's full shape, without reading or assembling any data."""
    if hasattr(weights, "shapes"):  # a layout's reader: from the files' indexes
        return dict(weights.shapes)
    return {name: tuple(tensor.shape) for name, tensor in weights.items()}


def tensor_dtypes(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.dtype]:
    """Every tensor's dtype as the file holds it, without reading any data."""
    if hasattr(weights, "dtypes"):
        return dict(weights.dtypes)
    return {name: tensor.dtype for name, tensor in weights.items()}
