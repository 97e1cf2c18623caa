"""Read a Hugging Face model folder as if it were Meta's layout — plumbing only.

A Llama 3 folder from the Hugging Face hub holds `config.json`, the weights as
`model.safetensors` (or `model-0000k-of-0000n.safetensors` listed in
`model.safetensors.index.json`) and `tokenizer.json`. `checkpoint_files.read_config` turns
config.json into params.json's keys; `HuggingFaceWeights` hands out the tensors under Meta's
names, one at a time from the memory-mapped files, with the query and key rows put back in
Meta's order.
The notebook then runs unchanged; its section "Meta's files and Hugging Face's" shows
what differs and why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from plumbing.checkpoint_files import CheckpointError, download_mistake, expected_shapes

# Meta's tensor names → Hugging Face's ({i}: the layer).
HF_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "layers.{i}.attention_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "layers.{i}.attention.wq.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "layers.{i}.attention.wk.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "layers.{i}.attention.wv.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "layers.{i}.attention.wo.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "layers.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "layers.{i}.feed_forward.w1.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "layers.{i}.feed_forward.w3.weight": "model.layers.{i}.mlp.up_proj.weight",
    "layers.{i}.feed_forward.w2.weight": "model.layers.{i}.mlp.down_proj.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_META_NAMES = {
    re.compile(re.escape(hf).replace(r"\{i\}", r"(\d+)") + "$"): meta
    for meta, hf in HF_NAMES.items()
}


def meta_name(hf_name: str) -> str:
    """Meta's name for a Hugging Face tensor name (unknown names come back unchanged)."""
    for pattern, meta in _META_NAMES.items():
        match = pattern.match(hf_name)
        if match:
            return meta.replace("{i}", match.group(1)) if match.groups() else meta
    return hf_name


def hf_name(meta: str) -> str:
    """Hugging Face's name for a tensor name of Meta's layout."""
    layer = re.match(r"layers\.(\d+)\.(.*)$", meta)
    if layer:
        return HF_NAMES["layers.{i}." + layer.group(2)].replace("{i}", layer.group(1))
    return HF_NAMES[meta]


def hf_rows_to_meta(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo Hugging Face's reordering of one q or k matrix's rows, head by head.

    In each head, Meta's rows come as RoPE pairs (0, 1), (2, 3), …; Hugging Face's
    converter put the first of every pair in the first half and the second in the second
    half, so that its rotate-half RoPE pairs row i with row i + head_dim/2. Putting them
    back: [heads × 2 halves × head_dim/2 × dim] → [heads × head_dim/2 × 2 × dim].
    """
    rows, dim = weight.shape
    return weight.view(n_heads, 2, rows // n_heads // 2, dim).transpose(1, 2).reshape(rows, dim)


def safetensors_files(folder: Path) -> dict[str, Path]:
    """Every tensor's Hugging Face name → the file that holds it (single file or the index)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            if not isinstance(weight_map, dict) or not all(
                isinstance(file, str) for file in weight_map.values()
            ):
                raise TypeError
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            wrong = (
                download_mistake(index)
                or "not a readable safetensors index (no weight_map from names to files)"
            )
            raise CheckpointError(f"{index} is {wrong}: download it again.") from None
        missing = sorted({file for file in weight_map.values() if not (folder / file).exists()})
        if missing:
            raise CheckpointError(
                f"{folder} has no {missing[0]}, which model.safetensors.index.json lists: "
                "download the missing shard(s)."
            )
        return {name: folder / file for name, file in weight_map.items()}
    single = folder / "model.safetensors"
    if not single.exists():
        raise CheckpointError(
            f"{folder} has config.json but no model.safetensors or model.safetensors.index.json: "
            "download the model's safetensors files."
        )
    return {name: single for name in _open(single).keys()}


_SAFETENSORS_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I8": torch.int8,
    "I64": torch.int64,
}


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (
        Exception
    ) as error:  # safetensors raises SafetensorError, OSError … depending on the damage
        if mistake := download_mistake(path):
            raise CheckpointError(f"{path} is {mistake}.") from None
        text = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({text}); it is truncated, corrupt or "
            "another kind of file — download it again."
        ) from None


class HuggingFaceWeights(Mapping):
    """A Hugging Face folder's tensors under Meta's names, read when looked up.

    `safe_open` memory-maps each file: looking a tensor up reads only that tensor, straight
    from the page cache, with no copy — except q and k, whose rows are put back in Meta's
    order (a copy of one matrix at a time).
    """

    config_name = "config.json"

    def __init__(self, folder: Path, params: dict):
        self.folder = Path(folder)
        files = safetensors_files(self.folder)
        self.handles = {path: _open(path) for path in sorted(set(files.values()))}
        found = {meta_name(name): (name, files[name]) for name in files}
        # In Meta's order (the files list names alphabetically), then any the model does not have.
        self.file_of = {
            name: found[name]
            for name in expected_shapes(params, params.get("tied_output", False))
            if name in found
        } | found
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        for name, (original, path) in self.file_of.items():
            try:
                view = self.handles[path].get_slice(original)
            except Exception:
                raise CheckpointError(
                    f"{path.name} does not hold {original}, which the index says it does: "
                    "download the model's files again."
                ) from None
            self.shapes[name] = tuple(view.get_shape())
            self.dtypes[name] = _SAFETENSORS_DTYPES.get(view.get_dtype(), torch.uint8)
        head_dim = params["dim"] // params["n_heads"]
        self.heads = {}  # q and k matrices: how many heads their rows hold
        for name, shape in self.shapes.items():
            if name.endswith("attention.wq.weight") or name.endswith("attention.wk.weight"):
                self.heads[name] = shape[0] // head_dim

    def describe(self, name: str) -> str:
        original = self.file_of[name][0] if name in self.file_of else hf_name(name)
        return f"{original} (Meta's {name})" if original != name else name

    def __getitem__(self, name: str) -> torch.Tensor:
        original, path = self.file_of[name]
        tensor = self.handles[path].get_tensor(original)
        if name in self.heads:
            tensor = hf_rows_to_meta(tensor, self.heads[name])
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self.file_of)

    def __len__(self) -> int:
        return len(self.file_of)
