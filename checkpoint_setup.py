"""Find and check a checkpoint in Meta's layout, and pick a device — plumbing only.

Nothing here does model math: the notebook does all of it. These helpers only
answer "which folder, which files, which device, which dtype" and turn the
usual mistakes into one sentence that names the fix.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Mapping
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
    expected_names = [f"consolidated.{i:02d}.pth" for i in range(len(shards))]
    if shards != expected_names:
        missing = sorted(set(expected_names) - set(shards)) or shards
        raise CheckpointError(
            f"{folder} has shards {', '.join(shards)}, which are not numbered 00 … {len(shards) - 1:02d} ({missing[0]} is missing or misnamed): download the missing shard(s)."
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


def ffn_hidden_size(params: dict) -> int:
    """Meta's rule for the SwiGLU width (the notebook derives it too, in the open)."""
    hidden = int(2 * 4 * params["dim"] / 3)
    if params.get("ffn_dim_multiplier") is not None:
        hidden = int(params["ffn_dim_multiplier"] * hidden)
    return params["multiple_of"] * math.ceil(hidden / params["multiple_of"])


def expected_shapes(params: dict, tied_output: bool = False) -> dict[str, tuple[int, ...]]:
    """Every tensor name of Meta's layout with the shape params.json implies."""
    dim, n_heads = params["dim"], params["n_heads"]
    head_dim = dim // n_heads
    kv_features = (params.get("n_kv_heads") or n_heads) * head_dim
    hidden = ffn_hidden_size(params)
    shapes = {"tok_embeddings.weight": (params["vocab_size"], dim), "norm.weight": (dim,)}
    if not tied_output:
        shapes["output.weight"] = (params["vocab_size"], dim)
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
    return shapes


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


def choose_streaming(value: str | None, device: torch.device) -> bool:
    """LLAMA3_STREAM: whether each weight is read from the file whenever it is used.

    auto: yes on the CPU (the memory-mapped file is already in RAM, as page cache, and
    keeping converted copies would double it); no on a GPU (copy each weight once). On a
    GPU with less memory than the model, LLAMA3_STREAM=1 runs it one weight at a time.
    """
    if value is None:
        value = os.environ.get("LLAMA3_STREAM", "auto")
    value = value.strip().lower() or "auto"
    if value == "auto":
        return device.type == "cpu"
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise CheckpointError(f"LLAMA3_STREAM={value!r} is not understood: use auto, 1 (stream weights from the file) or 0 (keep them on the device).")


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


# Context lengths Meta trained for (facts; params.json does not store them).
CONTEXT_LLAMA3 = 8192
CONTEXT_SCALED_ROPE = 131072
WEIGHT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _load_one(path: Path) -> dict[str, torch.Tensor]:
    """`torch.load(path, map_location="cpu", mmap=True, weights_only=True)`, with clear errors."""
    try:
        state_dict = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, ValueError, EOFError … depending on the damage
        text = str(error)
        if "Weights only load failed" in text or "weights_only" in text:
            raise CheckpointError(
                f"{path} contains pickled code or objects that are not tensors; loading refused (weights_only=True), nothing in it was run. Use the file from Meta's download."
            ) from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {text.splitlines()[0][:120] if text else 'no detail'}); it is truncated, corrupt or another kind of file — download it again."
        ) from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path} holds a {type(state_dict).__name__}, not a dictionary of tensors: use the file from Meta's download.")
    return state_dict


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
    "norm.weight": None,
}


def shard_axis(name: str) -> int | None:
    suffix = name.split(".", 2)[-1] if name.startswith("layers.") else name
    if suffix not in SHARD_AXIS:
        raise CheckpointError(f"unexpected tensor {name} in a sharded checkpoint: this is not a Llama 3 checkpoint in Meta's layout.")
    return SHARD_AXIS[suffix]


class ShardedWeights(Mapping):
    """A model-parallel checkpoint (consolidated.00.pth … NN.pth) read as one state dict.

    Every shard is memory-mapped; a tensor is assembled from its pieces only when it
    is looked up, so memory holds one whole tensor at a time, never the model.
    """

    def __init__(self, shards: list[dict[str, torch.Tensor]]):
        self.shards = shards
        self.shapes: dict[str, tuple[int, ...]] = {}
        for name, first in shards[0].items():
            axis = shard_axis(name)
            pieces = [shard.get(name) for shard in shards]
            if any(piece is None for piece in pieces):
                raise CheckpointError(f"tensor {name} is missing from shard {pieces.index(None):02d}: download that shard again.")
            shape = list(first.shape)
            if axis is not None:
                shape[axis] = sum(piece.shape[axis] for piece in pieces)
            self.shapes[name] = tuple(shape)

    def __getitem__(self, name: str) -> torch.Tensor:
        axis = shard_axis(name)
        if axis is None:
            return self.shards[0][name]
        return torch.cat([shard[name] for shard in self.shards], dim=axis)

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def load_weights(checkpoint_dir: Path) -> Mapping[str, torch.Tensor]:
    """The checkpoint's tensors by name, memory-mapped: tensors stay on disk until used.

    One file: `torch.load(consolidated.00.pth, map_location="cpu", mmap=True, weights_only=True)`
    (weights_only: a pickle that would run code is refused). Several files: the same for
    each, joined by `ShardedWeights`.
    """
    paths = sorted(Path(checkpoint_dir).glob("consolidated.*.pth"))
    if len(paths) <= 1:
        return _load_one(Path(checkpoint_dir) / "consolidated.00.pth")
    return ShardedWeights([_load_one(path) for path in paths])


def tensor_shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Every tensor's full shape, without reading or assembling any data."""
    if isinstance(state_dict, ShardedWeights):
        return dict(state_dict.shapes)
    return {name: tuple(tensor.shape) for name, tensor in state_dict.items()}


def tensor_dtypes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.dtype]:
    first = state_dict.shards[0] if isinstance(state_dict, ShardedWeights) else state_dict
    return {name: tensor.dtype for name, tensor in first.items()}


def check_weights(state_dict: Mapping[str, torch.Tensor], params: dict) -> str:
    """Every tensor present with the shape params.json implies; returns a one-line summary."""
    shapes, dtypes = tensor_shapes(state_dict), tensor_dtypes(state_dict)
    tied = "output.weight" not in shapes
    expected = expected_shapes(params, tied_output=tied)
    missing = [name for name in expected if name not in shapes]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(
            f"The checkpoint has no tensor {missing[0]}{more}: its weights do not match params.json (n_layers {params['n_layers']}); use both from the same download."
        )
    extra = [name for name in shapes if name not in expected]
    if extra:
        raise CheckpointError(
            f"The checkpoint has an unexpected tensor {extra[0]}: this is not a Llama 3 checkpoint in Meta's layout, or params.json is from another model."
        )
    for name, shape in expected.items():
        found = shapes[name]
        if found != shape:
            raise CheckpointError(
                f"{name} has shape {list(found)} but params.json implies {list(shape)}: params.json and consolidated.00.pth come from different models; use both from the same download."
            )
        if dtypes[name] not in WEIGHT_DTYPES:
            raise CheckpointError(f"{name} is {dtypes[name]}; this notebook reads bfloat16, float16 or float32 weights (Meta's are bfloat16).")
    n_kv_heads = params.get("n_kv_heads") or params["n_heads"]
    dtype_names = sorted({str(dtype).removeprefix("torch.") for dtype in dtypes.values()})
    shard_note = f", {len(state_dict.shards)} shards" if isinstance(state_dict, ShardedWeights) else ""
    return (
        f"checkpoint ok: {params['n_layers']} layers, dim {params['dim']}, {params['n_heads']} query heads sharing {n_kv_heads} key/value heads, "
        f"vocab {params['vocab_size']:,}, {'tied' if tied else 'separate'} output matrix, {'/'.join(dtype_names)}{shard_note}"
    )


def context_length(params: dict) -> int:
    """Llama 3 was trained on 8,192 positions; releases with scaled RoPE (3.1+) on 131,072."""
    return CONTEXT_SCALED_ROPE if params.get("use_scaled_rope") else CONTEXT_LLAMA3


def check_prompt(prompt: str, tokens: list[int], params: dict) -> None:
    """Refuse a prompt longer than the context; say what an empty or special-looking prompt means."""
    limit = context_length(params)
    if len(tokens) > limit:
        raise CheckpointError(f"The prompt is {len(tokens):,} tokens, longer than this model's context of {limit:,}: shorten LLAMA3_PROMPT.")
    if not prompt:
        print("note: the prompt is empty, so the model sees only <|begin_of_text|> and predicts how a text starts.")
    spelled = sorted(set(re.findall(r"<\|[A-Za-z0-9_]+\|>", prompt)))
    if spelled:
        print(f"note: the prompt spells {', '.join(spelled)}; that is encoded as ordinary text, not as special tokens.")


# Llama 3.1+ scaled RoPE: params.json says whether (use_scaled_rope) but not by how much.
ROPE_SCALE_FACTOR_3_1 = 8.0  # Llama 3.1 8B/70B/405B, Llama 3.3 70B
ROPE_SCALE_FACTOR_3_2 = 32.0  # Llama 3.2 1B and 3B


def rope_scale_factor(params: dict, value: str | None = None) -> tuple[float | None, str]:
    """The RoPE scale factor for this checkpoint, and why; None when RoPE is not scaled.

    Rule: among Meta's releases with use_scaled_rope, only Llama 3.2's text models
    (1B: dim 2048, 3B: dim 3072) have dim ≤ 3072, and they use 32; every other one
    (3.1 8B/70B/405B, 3.3 70B) uses 8. LLAMA3_ROPE_SCALE_FACTOR overrides the rule.
    """
    if not params.get("use_scaled_rope"):
        return None, "use_scaled_rope is not set: plain Llama 3 RoPE"
    if value is None:
        value = os.environ.get("LLAMA3_ROPE_SCALE_FACTOR", "")
    if value.strip():
        try:
            factor = float(value)
        except ValueError:
            factor = -1.0
        if not factor > 0:
            raise CheckpointError(f"LLAMA3_ROPE_SCALE_FACTOR={value!r} is not a positive number: use 8 (Llama 3.1/3.3) or 32 (Llama 3.2), or unset it.")
        return factor, f"LLAMA3_ROPE_SCALE_FACTOR={value}"
    if params["dim"] <= 3072:
        return ROPE_SCALE_FACTOR_3_2, f"dim {params['dim']} ≤ 3072: a Llama 3.2 model (set LLAMA3_ROPE_SCALE_FACTOR to override)"
    return ROPE_SCALE_FACTOR_3_1, f"dim {params['dim']} > 3072: a Llama 3.1/3.3 model (set LLAMA3_ROPE_SCALE_FACTOR to override)"


def use_short_error_messages() -> None:
    """In IPython/Jupyter, show this project's errors as their one sentence instead of a traceback."""
    try:
        shell = get_ipython()  # type: ignore[name-defined]  # noqa: F821 — defined only inside IPython
    except NameError:
        return
    from tokenizer_setup import TokenizerFileError

    def one_line(shell, kind, value, traceback, tb_offset=None):
        print(f"{kind.__name__}: {value}", file=sys.stderr)

    shell.set_custom_exc((CheckpointError, TokenizerFileError), one_line)
