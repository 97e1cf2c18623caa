"""Find the checkpoint folder and read its sizes — plumbing only.

Nothing here does model math: the notebook does all of it. These helpers answer
"which folder, which files, which sizes" and turn the usual mistakes into one
sentence that names the fix (a `CheckpointError`). A folder is in Meta's layout
(consolidated.00.pth + params.json) or Hugging Face's (config.json + safetensors,
whose tensors hf_checkpoint.py reads under Meta's names).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from plumbing import REPO_DIR, gguf_files, model_ids, release_facts
from plumbing.friendly_errors import CheckpointError

EMBEDDED_CHECKPOINT = REPO_DIR / "weights" / "llama3-tiny-hitchhiker"

# params.json keys the notebook reads, with the Python types they must have.
REQUIRED_PARAMS = {
    "dim": int,
    "n_layers": int,
    "n_heads": int,
    "vocab_size": int,
    "multiple_of": int,
    "norm_eps": float,
    "rope_theta": float,
}
# How a message names each kind of value.
KIND_WORDS = {float: "a number", int: "an integer", bool: "true or false"}
OPTIONAL_PARAMS = {"n_kv_heads": int, "ffn_dim_multiplier": float, "use_scaled_rope": bool}

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
CONFIG_SPELLING = {meta: key for key, meta in CONFIG_KEYS.items()} | {
    "n_kv_heads": "num_key_value_heads"
}


def describe(path: Path) -> str:
    """A path as a reader would want to see it: relative when inside the repo."""
    try:
        return str(Path(path).resolve().relative_to(REPO_DIR))
    except ValueError:
        return str(path)


def find_checkpoint_dir(value: str | None = None) -> Path:
    """The checkpoint folder from LLAMA3_CKPT (or `value`), else the embedded one."""
    if value is None:
        value = os.environ.get("LLAMA3_CKPT", "")
    if gguf_files.looks_like_ollama_name(value.strip()):  # llama3.2:1b
        return gguf_files.ollama_blob(value.strip())
    if model_ids.looks_like_model_id(value.strip()):  # meta-llama/Llama-3.2-1B
        value = str(model_ids.resolve(value.strip()))
    folder = Path(value).expanduser() if value.strip() else EMBEDDED_CHECKPOINT
    if not folder.exists():
        raise CheckpointError(
            f"Checkpoint folder {folder} does not exist: set LLAMA3_CKPT to the folder that holds "
            "consolidated.00.pth and params.json, a Hugging Face model folder, a GGUF file, a "
            "model id such as meta-llama/Llama-3.2-1B or an Ollama name such as llama3.2:1b."
        )
    if gguf_files.is_gguf(folder):
        return folder  # llama.cpp's format: one file; gguf_files checks it
    if not folder.is_dir():
        raise CheckpointError(
            f"{folder} is a file, not a folder: set LLAMA3_CKPT to the folder that holds it (for "
            "Meta's download, the `original/` folder)."
        )
    names = {p.name for p in folder.iterdir()}
    if not names:
        raise CheckpointError(
            f"Checkpoint folder {folder} is empty: point LLAMA3_CKPT at the folder where "
            "consolidated.00.pth and params.json were downloaded, or a Hugging Face model "
            "folder."
        )
    shards = sorted(n for n in names if n.startswith("consolidated.") and n.endswith(".pth"))
    if not shards:
        if "config.json" in names:
            if not any(
                n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in names
            ) and any(n.startswith("pytorch_model") for n in names):
                raise CheckpointError(
                    f"{folder} holds its weights as pytorch_model*.bin (pickles), which this "
                    "notebook does not load: download the model's *.safetensors files "
                    "instead, or point LLAMA3_CKPT at its original/ folder."
                )
            return folder  # Hugging Face's layout: hf_checkpoint checks its files
        ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
        if len(ggufs) == 1:
            return folder / ggufs[0]
        if ggufs:
            raise CheckpointError(
                f"{folder} holds {len(ggufs)} GGUF files ({', '.join(ggufs[:3])}…): set "
                "LLAMA3_CKPT to the one to run."
            )
        if any(n.endswith(".safetensors") for n in names):
            raise CheckpointError(
                f"{folder} has safetensors files but no config.json: copy config.json from the "
                "same Hugging Face download into that folder."
            )
        raise CheckpointError(
            f"{folder} has no consolidated.00.pth: point LLAMA3_CKPT at the `original/` folder of "
            "a Llama 3 download, or at a Hugging Face model folder."
        )
    expected_names = [f"consolidated.{i:02d}.pth" for i in range(len(shards))]
    if shards != expected_names:
        missing = sorted(set(expected_names) - set(shards)) or shards
        raise CheckpointError(
            f"{folder} has shards {', '.join(shards)}, which are not numbered 00 … "
            f"{len(shards) - 1:02d} ({missing[0]} is missing or misnamed): download the "
            "missing shard(s)."
        )
    if "params.json" not in names:
        raise CheckpointError(
            f"{folder} has {shards[0]} but no params.json: copy params.json from the same "
            "download into that folder."
        )
    return folder


def read_json_object(path: Path, fix: str) -> dict:
    """A JSON file that must hold an object (params.json, config.json); `fix` ends each error."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"Cannot read {path} ({error}): {fix}.") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}): {fix}."
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(data).__name__}, not an object of model settings: {fix}."
        )
    return data


def download_mistake(path: Path) -> str | None:
    """What a file is instead of itself after the usual failed downloads, from its first bytes; else
    None."""
    try:
        with open(path, "rb") as file:
            head = file.read(512).lstrip().lower()
    except OSError:
        return None
    if head.startswith(b"version https://git-lfs"):
        return (
            "a Git LFS pointer, not the file itself (run `git lfs pull`, or download the real file)"
        )
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return (
            "an HTML page, not the file (the download saved a web page instead; "
            "download the file itself)"
        )
    return None


def layout(checkpoint_dir: Path) -> str:
    """ "meta" (consolidated.*.pth + params.json), "huggingface" (config.json + safetensors),
    or "gguf" (one file)."""
    folder = Path(checkpoint_dir)
    if folder.is_file():
        return "gguf"
    if not any(folder.glob("consolidated.*.pth")) and (folder / "config.json").exists():
        return "huggingface"
    return "meta"


def read_config(folder: Path) -> dict:
    """config.json as params.json's keys, checked; plus what params.json leaves to rules.

    `ffn_hidden` (config.json states the feed-forward width), `tied_output`, and, for
    scaled RoPE, `rope_scaling` with the file's own factor, frequency factors and original
    context. Both spellings transformers has written are read: top-level `rope_theta` and
    `rope_scaling` (4.x, the hub's files), or `rope_parameters` (5.x).
    """
    path = Path(folder) / "config.json"
    config = read_json_object(path, "download config.json again from the same model")
    architectures = config.get("architectures") or []
    if "LlamaForCausalLM" not in architectures or config.get("model_type", "llama") != "llama":
        found = ", ".join(architectures) or config.get("model_type") or "an unnamed architecture"
        raise CheckpointError(
            f"{path} describes {found}, not LlamaForCausalLM: this notebook runs Llama 3 models "
            "only; point LLAMA3_CKPT at a Llama 3 folder."
        )
    for key in CONFIG_KEYS:
        if key not in config:
            raise CheckpointError(
                f"{path} has no {key!r}: it is not a complete Llama configuration; download "
                "config.json again from the same model."
            )
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
    if not is_kind(theta, float):
        raise CheckpointError(
            f"{path}: rope_theta is {theta!r}, it must be a number; download config.json again "
            "from the same model."
        )
    if scaling.get("rope_type", scaling.get("type", "default")) == "default":
        scaling = None  # "default" (either spelling) is plain RoPE
    params = {meta: config[key] for key, meta in CONFIG_KEYS.items()}
    params["n_kv_heads"] = config.get("num_key_value_heads") or config["num_attention_heads"]
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
            if not is_kind(scaling[key], float) or scaling[key] <= 0:
                raise CheckpointError(
                    f"{path}: the llama3 RoPE scaling's {key} is {scaling[key]!r}, it must be a "
                    "positive number; download config.json again from the same model."
                )
        params["rope_scaling"] = {key: scaling[key] for key in keys}
    params["tied_output"] = bool(config.get("tie_word_embeddings", False))
    head_dim = config.get("head_dim")
    if head_dim is not None and head_dim * params["n_heads"] != params["dim"]:
        raise CheckpointError(
            f"{path}: head_dim {head_dim} × {params['n_heads']} heads ≠ hidden_size "
            f"{params['dim']}; Llama 3 splits the width evenly among heads."
        )
    return params


def read_params(checkpoint_dir: Path) -> dict:
    """The model's sizes under params.json's names, checked.

    Meta's layout: params.json, every key present, of the right type. Hugging Face's:
    config.json, translated by read_config. Either way, sizes that fit together.
    """
    if layout(checkpoint_dir) == "huggingface":
        params = read_config(checkpoint_dir)
        return check_sizes(params, Path(checkpoint_dir) / "config.json", CONFIG_SPELLING)
    if layout(checkpoint_dir) == "gguf":
        params = gguf_files.metadata_params(checkpoint_dir)
        spelled = gguf_files.METADATA_KEYS | gguf_files.OPTIONAL_KEYS
        return check_sizes(params, Path(checkpoint_dir), spelled)
    path = Path(checkpoint_dir) / "params.json"
    params = read_json_object(path, "copy params.json from the same download as the weights")
    for key in REQUIRED_PARAMS:
        if key not in params:
            example = release_facts.LLAMA3_8B_PARAMS[key]
            raise CheckpointError(
                f"{path} has no {key!r}: add it (Llama 3 8B has {key}: {example}) or use the "
                "params.json from the same download."
            )
    for key, kind in {**REQUIRED_PARAMS, **OPTIONAL_PARAMS}.items():
        if key in params and params[key] is not None and not is_kind(params[key], kind):
            raise CheckpointError(
                f"{path}: {key} is {params[key]!r}, it must be {KIND_WORDS[kind]}."
            )
    return check_sizes(params, path)


def check_sizes(params: dict, path: Path, spelled: dict[str, str] | None = None) -> dict:
    """Sizes that are positive and fit together (heads divide the width, pairs for RoPE).

    `spelled` gives the file's own name for a params.json key (config.json's), for the messages.
    """
    name = (spelled or {}).get
    for key in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "ffn_hidden"):
        if params.get(key) is not None and not is_kind(params[key], int):
            raise CheckpointError(
                f"{path}: {name(key, key)} is {params[key]!r}, it must be an integer."
            )
    for key in ("norm_eps", "rope_theta", "ffn_dim_multiplier"):
        if params.get(key) is not None and not is_kind(params[key], float):
            raise CheckpointError(
                f"{path}: {name(key, key)} is {params[key]!r}, it must be a number."
            )
    for key in (
        "dim",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "vocab_size",
        "multiple_of",
        "ffn_hidden",
    ):
        if params.get(key) is not None and params[key] <= 0:
            raise CheckpointError(
                f"{path}: {name(key, key)} is {params[key]}, it must be a positive integer."
            )
    for key in ("norm_eps", "rope_theta", "ffn_dim_multiplier"):
        if params.get(key) is not None and params[key] <= 0:
            raise CheckpointError(
                f"{path}: {name(key, key)} is {params[key]}, it must be positive."
            )
    dim, n_heads, n_kv_heads = (
        name("dim", "dim"),
        name("n_heads", "n_heads"),
        name("n_kv_heads", "n_kv_heads"),
    )
    fix = f"fix {Path(path).name}, or use the one from the same download as the weights"
    if params["dim"] % params["n_heads"]:
        raise CheckpointError(
            f"{path}: {dim} {params['dim']} is not divisible by {n_heads} {params['n_heads']}, so "
            f"heads cannot split it; {fix}."
        )
    kv_heads = params.get("n_kv_heads") or params["n_heads"]
    if params["n_heads"] % kv_heads:
        raise CheckpointError(
            f"{path}: {n_heads} {params['n_heads']} is not divisible by {n_kv_heads} {kv_heads}, "
            f"so query heads cannot share key/value heads; {fix}."
        )
    if (params["dim"] // params["n_heads"]) % 2:
        raise CheckpointError(
            f"{path}: head size {dim}/{n_heads} = {params['dim'] // params['n_heads']} is odd, "
            f"and RoPE rotates pairs; {fix}."
        )
    return params


def ffn_hidden_size(params: dict) -> int:
    """The SwiGLU width: stated by a Hugging Face config, else Meta's rule (the notebook
    derives it too, in the open)."""
    if params.get("ffn_hidden") is not None:
        return params["ffn_hidden"]
    hidden = int(2 * 4 * params["dim"] / 3)
    if params.get("ffn_dim_multiplier") is not None:
        hidden = int(params["ffn_dim_multiplier"] * hidden)
    return params["multiple_of"] * math.ceil(hidden / params["multiple_of"])


def expected_shapes(params: dict, tied_output: bool = False) -> dict[str, tuple[int, ...]]:
    """Every tensor name of Meta's layout, in the order of Meta's files, with the shape params.json
    implies."""
    dim, n_heads = params["dim"], params["n_heads"]
    head_dim = dim // n_heads
    kv_features = (params.get("n_kv_heads") or n_heads) * head_dim
    hidden = ffn_hidden_size(params)
    shapes = {"tok_embeddings.weight": (params["vocab_size"], dim)}
    for i in range(params["n_layers"]):
        shapes |= {
            f"layers.{i}.attention.wq.weight": (n_heads * head_dim, dim),
            f"layers.{i}.attention.wk.weight": (kv_features, dim),
            f"layers.{i}.attention.wv.weight": (kv_features, dim),
            f"layers.{i}.attention.wo.weight": (dim, n_heads * head_dim),
            f"layers.{i}.feed_forward.w1.weight": (hidden, dim),
            f"layers.{i}.feed_forward.w2.weight": (dim, hidden),
            f"layers.{i}.feed_forward.w3.weight": (hidden, dim),
            f"layers.{i}.attention_norm.weight": (dim,),
            f"layers.{i}.ffn_norm.weight": (dim,),
        }
    shapes["norm.weight"] = (dim,)
    if not tied_output:
        shapes["output.weight"] = (params["vocab_size"], dim)
    return shapes


def is_kind(value, kind) -> bool:
    """A JSON value of this kind: bool, int (not a bool), or float (any number, not a bool)."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def n_parameters(params: dict, tied_output: bool | None = None) -> int:
    """How many numbers the model holds, from the shapes params.json implies (no file read)."""
    if tied_output is None:
        tied_output = bool(params.get("tied_output"))
    return sum(math.prod(shape) for shape in expected_shapes(params, tied_output).values())
