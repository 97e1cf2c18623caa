"""What is wrong with a checkpoint, as one sentence that names the fix — plumbing only.

The readers (meta_checkpoint, hf_checkpoint, gguf_files) translate; these functions judge:
a file that is something else after a failed download, a JSON file that is not an object,
params.json's keys and their types, sizes that are not positive or do not fit together,
and weights whose names and shapes are not the ones the sizes imply. Each raises a
`CheckpointError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch

from plumbing import model_sizes, release_facts, tensor_names
from plumbing.friendly_errors import CheckpointError

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

# Sizes checked in any layout: whole numbers, and other numbers.
INTEGER_SIZES = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "ffn_hidden", "head_dim")
NUMBER_SIZES = ("norm_eps", "rope_theta", "ffn_dim_multiplier")

# The largest size any model the notebook can hold might state (the 405B: dim 16,384, 126
# layers, 128 heads, ffn 53,248): a size past these is a damaged or crafted file, refused
# before any shape is built from it (2^31 layers would take gigabytes of names alone).
LARGEST = {
    "dim": 2**17,
    "n_layers": 2**10,
    "n_heads": 2**12,
    "n_kv_heads": 2**12,
    "vocab_size": 2**22,
    "ffn_hidden": 2**20,
    "head_dim": 2**12,
    "multiple_of": 2**20,
    "ffn_dim_multiplier": 64.0,
    "norm_eps": 1.0,
    "rope_theta": 1e12,
}

# The weights' number formats the notebook computes from.
WEIGHT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def is_kind(value, kind) -> bool:
    """A JSON value of this kind: bool, int (not a bool), or float (any number, not a bool)."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


def read_json_object(path: Path, fix: str) -> dict:
    """A JSON file that must hold an object (params.json, config.json); `fix` ends each error."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"Cannot read {path} ({error}): {fix}.") from None
    except RecursionError:
        raise CheckpointError(
            f"{path} nests its values too deeply to be settings: {fix}."
        ) from None
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}): {fix}."
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(data).__name__}, not an object of model settings: {fix}."
        )
    return data


def check_params_json(params: dict, path: Path) -> dict:
    """Meta's params.json: every key the notebook reads present, each of the right type."""
    for key in REQUIRED_PARAMS:
        if key not in params:
            example = release_facts.LLAMA3_8B_PARAMS[key]
            raise CheckpointError(
                f"{path} has no {key!r}: add it (Llama 3 8B has {key}: {example}) or use the "
                "params.json from the same download."
            )
    for key, kind in {**REQUIRED_PARAMS, **OPTIONAL_PARAMS}.items():
        optional_and_null = key in OPTIONAL_PARAMS and params.get(key) is None
        if key in params and not optional_and_null and not is_kind(params[key], kind):
            raise CheckpointError(
                f"{path}: {key} is {params[key]!r}, it must be {KIND_WORDS[kind]}."
            )
    return params


# Llama 4's params.json keys (facts: llama_models/llama4/args.py), each optional, and what
# its `moe_args` holds; the defaults are Meta's, filled in by model_sizes.
LLAMA4_OPTIONAL = {
    "nope_layer_interval": int,
    "attention_chunk_size": int,
    "use_qk_norm": bool,
    "attn_temperature_tuning": bool,
    "floor_scale": float,
    "attn_scale": float,
    "ffn_exp": float,
    "rope_scaling_factor": float,
    "rope_high_freq_factor": float,
}
MOE_ARGS = {
    "num_experts": int,
    "top_k": int,
    "interleave_moe_layer_step": int,
    "capacity_factor": float,
    "auto_scale_F": bool,
}


def check_llama4_params(params: dict, path: Path) -> dict:
    """A Llama 4 params.json's own keys: each of its kind, the sizes positive, `moe_args` an
    object whose top_k is at most its num_experts, with `ffn_exp` and `ffn_dim_multiplier` that
    Meta's rule for an expert's width needs."""
    fix = "use the params.json from the same download as the weights"

    def check(where: dict, kinds: dict, prefix: str) -> None:
        for key, kind in kinds.items():
            value = where.get(key)
            if value is None:
                continue
            if not is_kind(value, kind) or (kind is not bool and value <= 0):
                noun = KIND_WORDS[kind].split(" ", 1)[1]
                words = KIND_WORDS[kind] if kind is bool else f"a positive {noun}"
                raise CheckpointError(
                    f"{path}: {prefix}{key} is {value!r}, it must be {words}; {fix}."
                )

    check(params, LLAMA4_OPTIONAL, "")
    moe = params.get("moe_args")
    if moe is None:
        return params
    if not isinstance(moe, dict):
        raise CheckpointError(f"{path}: moe_args is {moe!r}, it must be an object; {fix}.")
    check(moe, MOE_ARGS, "moe_args.")
    for key, where in (("num_experts", moe), ("ffn_exp", params), ("ffn_dim_multiplier", params)):
        if where.get(key) is None:
            raise CheckpointError(
                f"{path}: a mixture of experts needs {key}, which it does not state; {fix}."
            )
    if moe.get("top_k", 1) > moe["num_experts"]:
        raise CheckpointError(
            f"{path}: moe_args.top_k is {moe['top_k']}, more than its {moe['num_experts']} "
            f"experts; {fix}."
        )
    return params


def check_sizes(params: dict, path: Path, spelled: dict[str, str] | None = None) -> dict:
    """Sizes that are positive and fit together (heads divide the width, pairs for RoPE).

    `spelled` gives the file's own name for a params.json key (config.json's), for the messages.
    """
    name = (spelled or {}).get
    for key in INTEGER_SIZES:
        if params.get(key) is not None and not is_kind(params[key], int):
            raise CheckpointError(
                f"{path}: {name(key, key)} is {params[key]!r}, it must be an integer."
            )
    for key in NUMBER_SIZES:
        if params.get(key) is not None and not is_kind(params[key], float):
            raise CheckpointError(
                f"{path}: {name(key, key)} is {params[key]!r}, it must be a number."
            )
    if params.get("multiple_of") is not None and not is_kind(params["multiple_of"], int):
        raise CheckpointError(
            f"{path}: multiple_of is {params['multiple_of']!r}, it must be an integer."
        )
    for key in (*INTEGER_SIZES, "multiple_of"):
        if params.get(key) is not None and params[key] <= 0:
            raise CheckpointError(
                f"{path}: {name(key, key)} is {params[key]}, it must be a positive integer."
            )
    for key in NUMBER_SIZES:
        if params.get(key) is not None and not (math.isfinite(params[key]) and params[key] > 0):
            raise CheckpointError(
                f"{path}: {name(key, key)} is {params[key]}, it must be positive."
            )
    for key, largest in LARGEST.items():
        if params.get(key) is not None and params[key] > largest:
            raise CheckpointError(
                f"{path}: {name(key, key)} is {params[key]:,}, more than any Llama model states "
                f"(at most {largest:,} here), so the file is damaged; use the one from the same "
                "download as the weights."
            )
    dim, n_heads, n_kv_heads = (
        name("dim", "dim"),
        name("n_heads", "n_heads"),
        name("n_kv_heads", "n_kv_heads"),
    )
    fix = f"fix {Path(path).name}, or use the one from the same download as the weights"
    if params.get("head_dim") is None and params["dim"] % params["n_heads"]:
        raise CheckpointError(
            f"{path}: {dim} {params['dim']} is not divisible by {n_heads} {params['n_heads']}, so "
            f"heads cannot split it; {fix}."
        )
    kv_heads = model_sizes.filled(params)["n_kv_heads"]
    if params["n_heads"] % kv_heads:
        raise CheckpointError(
            f"{path}: {n_heads} {params['n_heads']} is not divisible by {n_kv_heads} {kv_heads}, "
            f"so query heads cannot share key/value heads; {fix}."
        )
    if model_sizes.head_dim(params) % 2:
        raise CheckpointError(
            f"{path}: head size {model_sizes.head_dim(params)} is odd, "
            f"and RoPE rotates pairs; {fix}."
        )
    return params


def check_pair_factors(params: dict, stored: list[float], path: Path, name: str) -> None:
    """Scaled RoPE stored as one factor per pair (GGUF's `name`, rope_freqs.weight) must be
    Llama 3.1's rule, the only one the notebook implements: the factors it gives for this
    head size, from params' rope_scaling (the largest factor and the release constants). The
    notebook derives the frequencies themselves, in its section on the family."""
    scaling = params["rope_scaling"]
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    head_dim = model_sizes.head_dim(params)
    expected = []
    for pair in range(head_dim // 2):
        wavelength = 2 * math.pi * params["rope_theta"] ** (2 * pair / head_dim)
        if wavelength < original / high:
            expected.append(1.0)
        elif wavelength > original / low:
            expected.append(factor)
        else:  # between (none where the two factors are equal, as Llama 4's are)
            smooth = (original / wavelength - low) / (high - low)
            expected.append(1 / ((1 - smooth) / factor + smooth))
    if len(stored) != len(expected) or not all(
        abs(s - e) <= 1e-8 + 1e-5 * abs(e) for s, e in zip(stored, expected, strict=True)
    ):
        raise CheckpointError(
            f"{path}: its {name} are not Llama 3.1's RoPE scaling "
            f"(factor {factor:g}, low/high frequency factors {low:g}/{high:g}, original context "
            f"{original}): this notebook implements only that rule; use a Llama 3 GGUF file."
        )


def check_weights(weights: Mapping, params: dict) -> str:
    """Every tensor present with the shape the params imply; returns a one-line summary.

    `weights`: a layout's reader (tensor_names.NamedWeights), which names its files in the
    messages, or a plain dict of tensors (then named as Meta's files).
    """
    shapes = tensor_names.tensor_shapes(weights)
    dtypes = tensor_names.tensor_dtypes(weights)
    source = getattr(weights, "source", "params.json")
    files = getattr(weights, "files", "consolidated.00.pth")
    describe = getattr(weights, "describe", str)
    # No output matrix in the files means tied, unless config.json says it is not (params.json
    # never says).
    sizes = model_sizes.filled(params, tied_output=True)
    tied = "output.weight" not in shapes and sizes["tied_output"]
    expected = model_sizes.expected_shapes(sizes, tied_output=tied)
    missing = [name for name in expected if name not in shapes]
    if missing == ["output.weight"]:
        raise CheckpointError(
            f"The checkpoint has no output matrix {describe('output.weight')}, and {source} does "
            f"not say it is tied to the embedding: use {source} from the same download as the "
            "weights."
        )
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(
            f"The checkpoint has no tensor {describe(missing[0])}{more}: its weights do not match "
            f"{source} (n_layers {params['n_layers']}); use both from the same download."
        )
    extra = [name for name in shapes if name not in expected]
    if extra:
        raise CheckpointError(
            f"The checkpoint has an unexpected tensor {describe(extra[0])}: this is not a Llama 3 "
            f"checkpoint, or {source} is from another model."
        )
    for name, shape in expected.items():
        found = shapes[name]
        if found != shape:
            raise CheckpointError(
                f"{describe(name)} has shape {list(found)} but {source} implies {list(shape)}: "
                f"{source} and {files} come from different models; use both from the same "
                "download."
            )
        if dtypes[name] not in WEIGHT_DTYPES:
            raise CheckpointError(
                f"{describe(name)} is {dtypes[name]}; this notebook reads bfloat16, float16 or "
                "float32 weights (Meta's are bfloat16)."
            )
    dtype_names = sorted({str(dtype).removeprefix("torch.") for dtype in dtypes.values()})
    note = weights.note() if hasattr(weights, "note") else ""
    return (
        f"checkpoint ok: {sizes['n_layers']} layers, dim {sizes['dim']}, {sizes['n_heads']} "
        f"query heads sharing {sizes['n_kv_heads']} key/value heads,\n"
        f"               vocab {sizes['vocab_size']:,}, {'tied' if tied else 'separate'} output "
        f"matrix, {'/'.join(dtype_names)}{note}"
    )
