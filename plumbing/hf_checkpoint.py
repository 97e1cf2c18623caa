"""Read a Hugging Face model folder as if it were Meta's layout — plumbing only.

A Llama 3 folder from the Hugging Face hub holds `config.json`, the weights as
`model.safetensors` (or `model-0000k-of-0000n.safetensors` listed in
`model.safetensors.index.json`) and `tokenizer.json`. `read_params` turns config.json into
params.json's keys; `HuggingFaceWeights` hands out the tensors under Meta's
names, one at a time from the memory-mapped files, with the query and key rows put back in
Meta's order.
The notebook then runs unchanged; its section "Meta's files and Hugging Face's" shows
what differs and why. A Llama 4 folder (the notebook's last section) is read by the same
reader, with its own config keys and tensor layouts from hf_llama4.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open

from plumbing import checkpoint_checks, hf_llama4, model_sizes, release_facts, tensor_names
from plumbing.checkpoint_files import TokenizerSource
from plumbing.friendly_errors import CheckpointError
from plumbing.tensor_names import NamedWeights

LAYOUT = "Hugging Face's layout (config.json + safetensors)"

# The architectures the notebook runs, by config.json's model_type: Llama 3, and Qwen3, which
# adds an RMSNorm on each query and key head (`qk_norm`) and states its head width.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def looks_like(path: Path) -> bool:
    """A folder with config.json and no consolidated.*.pth (Meta's `original/` beside it is
    Meta's)."""
    folder = Path(path)
    return (folder / "config.json").is_file() and not any(folder.glob("consolidated.*.pth"))


# config.json keys the notebook needs, each with params.json's name for it.
CONFIG_KEYS = {
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "vocab_size": "vocab_size",
    "intermediate_size": "ffn_hidden",
    "rms_norm_eps": "norm_eps",
}
# For messages about a config.json: its own name for each params.json key.
SPELLING = {meta: key for key, meta in CONFIG_KEYS.items()} | {"n_kv_heads": "num_key_value_heads"}


def tokenizer_source(folder: Path) -> TokenizerSource:
    """Hugging Face's folder: tokenizer.json; without one, a tokenizer.model beside it."""
    folder = Path(folder)
    if (folder / "tokenizer.json").exists():
        return TokenizerSource("tokenizer.json", folder / "tokenizer.json")
    return TokenizerSource("tokenizer.model", folder / "tokenizer.model")


def sizes_path(folder: Path) -> Path:
    """The file that states the sizes."""
    return Path(folder) / "config.json"


def is_llama4(folder: Path) -> bool:
    """Whether config.json describes a Llama 4 (one that cannot be read is read_params' to
    name)."""
    try:
        return json.loads(sizes_path(folder).read_text()).get("model_type") in hf_llama4.MODEL_TYPES
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def read_params(folder: Path, llama4: bool = False) -> dict:
    """config.json as params.json's keys, checked; plus what params.json leaves to rules.

    `ffn_hidden` (config.json states the feed-forward width), `tied_output`, and, for
    scaled RoPE, `rope_scaling` with the file's own factor, frequency factors and original
    context. Both spellings transformers has written are read: top-level `rope_theta` and
    `rope_scaling` (4.x, the hub's files), or `rope_parameters` (5.x). A Llama 4's config
    only where `llama4` says the caller teaches it (the notebook's last section): hf_llama4
    reads its own keys.
    """
    path = sizes_path(folder)
    config = checkpoint_checks.read_json_object(
        path, "download config.json again from the same model"
    )
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise CheckpointError(
            f"{path}: architectures is {architectures!r}, not a list of names; download "
            "config.json again from the same model."
        )
    model_type = config.get("model_type", "llama")
    if model_type in hf_llama4.MODEL_TYPES and not llama4:
        raise CheckpointError(
            f"{path} describes a Llama 4 ({', '.join(architectures) or model_type}): it adds "
            f"{release_facts.NOT_TAUGHT['llama4']}, which only the notebook's last section runs."
        )
    if llama4 and model_type not in hf_llama4.MODEL_TYPES:
        raise CheckpointError(f"{path} is not a Llama 4 model's: its model_type is {model_type!r}.")
    if llama4:
        config = hf_llama4.text_config(config, path)
    elif not isinstance(model_type, str) or ARCHITECTURES.get(model_type) not in architectures:
        found = ", ".join(architectures) or config.get("model_type") or "an unnamed architecture"
        adds = release_facts.NOT_TAUGHT.get(model_type) if isinstance(model_type, str) else None
        why = f" ({model_type} adds {adds}, which it does not teach)" if adds else ""
        raise CheckpointError(
            f"{path} describes {found}, not LlamaForCausalLM or Qwen3ForCausalLM: this notebook "
            f"runs Llama 3 and Qwen3 models only{why}; point LLAMA3_CKPT at one of those."
        )
    for flag, what in (
        ("attention_bias", "biases on attention's projections"),
        ("use_sliding_window", "attention over a sliding window"),
    ):
        if config.get(flag):
            raise CheckpointError(
                f"{path} sets {flag}: {what}, which this notebook does not teach; point "
                "LLAMA3_CKPT at a model without it."
            )
    for key, meta in CONFIG_KEYS.items():
        if key not in config:
            raise CheckpointError(
                f"{path} has no {key!r}: it is not a complete Llama configuration; download "
                "config.json again from the same model."
            )
        kind = float if meta == "norm_eps" else int
        if not checkpoint_checks.is_kind(config[key], kind):
            words = checkpoint_checks.KIND_WORDS[kind]
            raise CheckpointError(f"{path}: {key} is {config[key]!r}, it must be {words}.")
    rope = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or rope
    for key, value in (("rope_parameters", rope), ("rope_scaling", scaling)):
        if not isinstance(value, dict):
            raise CheckpointError(
                f"{path}: {key} is {value!r}, not an object of RoPE settings; download "
                "config.json again from the same model."
            )
    theta = config.get("rope_theta", rope.get("rope_theta"))
    if theta is None:
        raise CheckpointError(
            f"{path} states no rope_theta (neither at the top nor in rope_parameters): download "
            "config.json again from the same model."
        )
    if not checkpoint_checks.is_kind(theta, float):
        raise CheckpointError(
            f"{path}: rope_theta is {theta!r}, it must be a number; download config.json again "
            "from the same model."
        )
    if scaling.get("rope_type", scaling.get("type", "default")) == "default":
        scaling = None  # "default" (either spelling) is plain RoPE
    params = {meta: config[key] for key, meta in CONFIG_KEYS.items()}
    if config.get("num_key_value_heads"):  # else one per query head (model_sizes fills it)
        params["n_kv_heads"] = config["num_key_value_heads"]
    params["rope_theta"] = float(theta)
    params["use_scaled_rope"] = scaling is not None
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind != "llama3":
            raise CheckpointError(
                f"{path}: RoPE scaling of type {kind!r}; Llama 3.1+ uses 'llama3', and this "
                "notebook implements only that one."
            )
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        missing = [key for key in keys if key not in scaling]
        if missing:
            raise CheckpointError(
                f"{path}: the llama3 RoPE scaling has no {missing[0]!r}; download config.json "
                "again from the same model."
            )
        for key in keys:
            if not checkpoint_checks.is_kind(scaling[key], float) or scaling[key] <= 0:
                raise CheckpointError(
                    f"{path}: the llama3 RoPE scaling's {key} is {scaling[key]!r}, it must be a "
                    "positive number; download config.json again from the same model."
                )
        params["rope_scaling"] = {key: scaling[key] for key in keys}
    params["tied_output"] = bool(config.get("tie_word_embeddings", False))
    stated_context = config.get("max_position_embeddings")
    if checkpoint_checks.is_kind(stated_context, int) and stated_context > 0:
        params["context_length"] = stated_context
    head_dim = config.get("head_dim")
    if head_dim is not None and not checkpoint_checks.is_kind(head_dim, int):
        raise CheckpointError(f"{path}: head_dim is {head_dim!r}, it must be an integer.")
    if model_type == "qwen3":  # its own head width, and a norm on each query and key head
        if head_dim is None:
            raise CheckpointError(
                f"{path} states no head_dim, which every Qwen3 config.json states: download "
                "config.json again from the same model."
            )
        params["head_dim"], params["qk_norm"] = head_dim, True
    elif head_dim is not None and head_dim * params["n_heads"] != params["dim"]:
        raise CheckpointError(
            f"{path}: head_dim {head_dim} × {params['n_heads']} heads ≠ hidden_size "
            f"{params['dim']}; Llama 3 splits the width evenly among heads."
        )
    return hf_llama4.read_params(config, path, params) if llama4 else params


# The tensors a Hugging Face folder (and llama.cpp's Qwen3 file) keeps in rotate-half order:
# q and k, and Qwen3's gains of one head's query and key features.
ROTATE_HALF = re.compile(r"layers\.\d+\.attention\.(wq|wk|q_norm|k_norm)\.weight")


def rotate_half_rows(shapes: dict[str, tuple[int, ...]], params: dict) -> dict[str, int]:
    """Those tensors among `shapes` (Meta's names), each with how many heads its rows hold."""
    head_dim = model_sizes.head_dim(params)
    return {
        name: shape[0] // head_dim for name, shape in shapes.items() if ROTATE_HALF.fullmatch(name)
    }


def hf_rows_to_meta(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo Hugging Face's reordering of one q or k matrix's rows (or one head's gains), head
    by head.

    In each head, Meta's rows come as RoPE pairs (0, 1), (2, 3), …; Hugging Face's
    converter put the first of every pair in the first half and the second in the second
    half, so that its rotate-half RoPE pairs row i with row i + head_dim/2. Putting them
    back: [heads × 2 halves × head_dim/2 × dim] → [heads × head_dim/2 × 2 × dim].
    """
    if weight.dim() == 1:  # a head's gains: rows of one number
        return hf_rows_to_meta(weight[:, None], n_heads)[:, 0]
    rows, dim = weight.shape
    return weight.view(n_heads, 2, rows // n_heads // 2, dim).transpose(1, 2).reshape(rows, dim)


def meta_rows_to_hf(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The reordering `hf_rows_to_meta` undoes: each head's rows from Meta's adjacent pairs
    (2i, 2i+1) to Hugging Face's (i, i + head_dim/2), as its converter writes them."""
    if weight.dim() == 1:
        return meta_rows_to_hf(weight[:, None], n_heads)[:, 0]
    rows, dim = weight.shape
    return weight.view(n_heads, rows // n_heads // 2, 2, dim).transpose(1, 2).reshape(rows, dim)


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
                checkpoint_checks.download_mistake(index)
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
        if mistake := checkpoint_checks.download_mistake(path):
            raise CheckpointError(f"{path} is {mistake}.") from None
        text = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({text}); it is truncated, corrupt or "
            "another kind of file — download it again."
        ) from None


class HuggingFaceWeights(NamedWeights):
    """A Hugging Face folder's tensors under Meta's names, read when looked up.

    `safe_open` memory-maps each file: looking a tensor up reads only that tensor, straight
    from the page cache, with no copy — except Llama 3's q and k, whose rows are put back in
    Meta's order (a copy of one matrix at a time). A Llama 4's names and layouts are
    hf_llama4's: its router is read transposed, its experts' gate and up as halves of one
    tensor.
    """

    source = "config.json"
    files = "the safetensors files"

    def __init__(self, folder: Path, params: dict):
        self.folder = Path(folder)
        files = safetensors_files(self.folder)
        self.handles = {path: _open(path) for path in sorted(set(files.values()))}
        llama4 = hf_llama4.is_llama4(params)
        found = {  # Meta's name → (the file's name, the file, how Meta lays it out)
            meta: (name, files[name], how)
            for name in files
            for meta, how in (
                hf_llama4.to_meta(name)
                if llama4
                else [(tensor_names.HUGGING_FACE.to_meta(name), "")]
            )
        }
        # In Meta's order (the files list names alphabetically), then any the model does not have.
        self.file_of = {
            name: found[name] for name in model_sizes.expected_shapes(params) if name in found
        } | found
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        for name, (original, path, how) in self.file_of.items():
            try:
                view = self.handles[path].get_slice(original)
            except Exception:
                raise CheckpointError(
                    f"{path.name} does not hold {original}, which the index says it does: "
                    "download the model's files again."
                ) from None
            self.shapes[name] = hf_llama4.meta_shape(tuple(view.get_shape()), how)
            self.dtypes[name] = _SAFETENSORS_DTYPES.get(view.get_dtype(), torch.uint8)
        # Llama 3's q and k rows, put back in Meta's order when read
        self.heads = {} if llama4 else rotate_half_rows(self.shapes, params)

    def describe(self, name: str) -> str:
        if name in self.file_of:
            original = self.file_of[name][0]
        else:
            original = tensor_names.HUGGING_FACE.from_meta(name)
        return f"{original} (Meta's {name})" if original != name else name

    def note(self) -> str:
        n_files = len(self.handles)
        return f", Hugging Face layout ({n_files} safetensors file{'s' if n_files > 1 else ''})"

    def __getitem__(self, name: str) -> torch.Tensor:
        original, path, how = self.file_of[name]
        tensor = hf_llama4.read_as_meta(self.handles[path], original, how)
        if name in self.heads:
            tensor = hf_rows_to_meta(tensor, self.heads[name])
        return tensor


def weights(folder: Path, params: dict) -> NamedWeights:
    """The safetensors files' tensors by Meta's names, memory-mapped."""
    return HuggingFaceWeights(folder, params)
