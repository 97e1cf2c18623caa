"""Find and check a checkpoint in Meta's layout, and pick a device — plumbing only.

Nothing here does model math: the notebook does all of it. These helpers only
answer "which folder, which files, which device, which dtype" and turn the
usual mistakes into one sentence that names the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

REPO_DIR = Path(__file__).resolve().parent
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
OPTIONAL_PARAMS = {"n_kv_heads": int, "ffn_dim_multiplier": float, "use_scaled_rope": bool}


class CheckpointError(ValueError):
    """The checkpoint folder or one of its files is not usable; the message says why."""


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
    folder = Path(value).expanduser() if value.strip() else EMBEDDED_CHECKPOINT
    if not folder.exists():
        raise CheckpointError(f"Checkpoint folder {folder} does not exist: set LLAMA3_CKPT to the folder that holds consolidated.00.pth and params.json.")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file, not a folder: set LLAMA3_CKPT to the folder that holds it (for Meta's download, the `original/` folder).")
    names = {p.name for p in folder.iterdir()}
    if not names:
        raise CheckpointError(
            f"Checkpoint folder {folder} is empty: point LLAMA3_CKPT at the folder where consolidated.00.pth and params.json were downloaded."
        )
    shards = sorted(n for n in names if n.startswith("consolidated.") and n.endswith(".pth"))
    if not shards:
        if "config.json" in names or any(n.endswith(".safetensors") for n in names):
            hint = f" (try {folder / 'original'})" if (folder / "original").is_dir() else ""
            raise CheckpointError(
                f"{folder} is in Hugging Face format (config.json / *.safetensors); this notebook reads Meta's original layout — point LLAMA3_CKPT at its `original/` subfolder{hint}."
            )
        raise CheckpointError(f"{folder} has no consolidated.00.pth: point LLAMA3_CKPT at the `original/` folder of a Llama 3 download.")
    if len(shards) > 1:
        raise CheckpointError(
            f"{folder} holds {len(shards)} shards ({shards[0]} … {shards[-1]}); this notebook reads single-file checkpoints so far (8B, 3.x 1B/3B): point LLAMA3_CKPT at one of those."
        )
    if "params.json" not in names:
        raise CheckpointError(f"{folder} has {shards[0]} but no params.json: copy params.json from the same download into that folder.")
    return folder


def read_params(checkpoint_dir: Path) -> dict:
    """params.json, checked: every key present, of the right type, and sizes that fit together."""
    path = Path(checkpoint_dir) / "params.json"
    try:
        params = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"Cannot read {path} ({error}): copy params.json from the same download as the weights.") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}): copy params.json from the same download as the weights."
        ) from None
    if not isinstance(params, dict):
        raise CheckpointError(f"{path} holds a JSON {type(params).__name__}, not an object of model settings: copy params.json from the same download.")
    for key in REQUIRED_PARAMS:
        if key not in params:
            raise CheckpointError(f"{path} has no {key!r}: add it (Llama 3 8B has {key}: {_EXAMPLE_8B[key]}) or use the params.json from the same download.")
    for key, kind in {**REQUIRED_PARAMS, **OPTIONAL_PARAMS}.items():
        if key in params and params[key] is not None and not _is_kind(params[key], kind):
            raise CheckpointError(
                f"{path}: {key} is {params[key]!r}, it must be {'a number' if kind is float else 'an integer' if kind is int else 'true or false'}."
            )
    for key in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of"):
        if params.get(key) is not None and params[key] <= 0:
            raise CheckpointError(f"{path}: {key} is {params[key]}, it must be a positive integer.")
    for key in ("norm_eps", "rope_theta", "ffn_dim_multiplier"):
        if params.get(key) is not None and params[key] <= 0:
            raise CheckpointError(f"{path}: {key} is {params[key]}, it must be positive.")
    if params["dim"] % params["n_heads"]:
        raise CheckpointError(f"{path}: dim {params['dim']} is not divisible by n_heads {params['n_heads']}, so heads cannot split it; fix params.json.")
    n_kv_heads = params.get("n_kv_heads") or params["n_heads"]
    if params["n_heads"] % n_kv_heads:
        raise CheckpointError(
            f"{path}: n_heads {params['n_heads']} is not divisible by n_kv_heads {n_kv_heads}, so query heads cannot share key/value heads; fix params.json."
        )
    if (params["dim"] // params["n_heads"]) % 2:
        raise CheckpointError(f"{path}: head size dim/n_heads = {params['dim'] // params['n_heads']} is odd, and RoPE rotates pairs; fix params.json.")
    return params


_EXAMPLE_8B = {"dim": 4096, "n_layers": 32, "n_heads": 32, "vocab_size": 128256, "multiple_of": 1024, "norm_eps": 1e-05, "rope_theta": 500000.0}


def _is_kind(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def choose_device(name: str | None = None) -> torch.device:
    """LLAMA3_DEVICE: auto (cuda, then mps, then cpu), or a device name that must exist."""
    if name is None:
        name = os.environ.get("LLAMA3_DEVICE", "auto")
    name = name.strip().lower() or "auto"
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CheckpointError(f"LLAMA3_DEVICE={name!r} is not a device name: use auto, cpu, cuda, cuda:1 or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"LLAMA3_DEVICE={name} but this PyTorch sees no CUDA GPU: use LLAMA3_DEVICE=auto or cpu (or install a CUDA build of PyTorch).")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CheckpointError(
            f"LLAMA3_DEVICE={name} but only {torch.cuda.device_count()} CUDA GPU(s) exist: use cuda:0 … cuda:{torch.cuda.device_count() - 1}."
        )
    if device.type == "mps" and not mps_ok:
        raise CheckpointError(f"LLAMA3_DEVICE={name} but Apple's MPS is not available here: use LLAMA3_DEVICE=auto or cpu.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise CheckpointError(f"LLAMA3_DEVICE={name} is not supported by this notebook: use auto, cpu, cuda or mps.")
    return device


def choose_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """LLAMA3_DTYPE: float32, bfloat16, or auto (bfloat16 on CUDA, float32 elsewhere).

    Why float32 on CPU: bf16 matmuls are fast only on CPUs with AVX512-BF16/AMX
    and can be many times slower elsewhere, while float32 is fast everywhere.
    The weights stay bf16 on disk either way; each one is converted when used.
    """
    if name is None:
        name = os.environ.get("LLAMA3_DTYPE", "auto")
    name = name.strip().lower() or "auto"
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    choices = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if name not in choices:
        raise CheckpointError(f"LLAMA3_DTYPE={name!r} is not supported: use auto, float32 or bfloat16.")
    return choices[name]
