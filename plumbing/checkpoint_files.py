"""Find the checkpoint: which folder or file LLAMA3_CKPT names — plumbing only.

`find_checkpoint_dir` reads LLAMA3_CKPT (a folder, a GGUF file, a Hugging Face model id or
an Ollama name) and turns the usual mistakes into one sentence that names the fix (a
`CheckpointError`). Which layout the checkpoint is in, each layout's reader says of itself
(`looks_like`); checkpoints.open_checkpoint asks them, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from plumbing import REPO_DIR, model_ids, settings
from plumbing.friendly_errors import CheckpointError

EMBEDDED_CHECKPOINT = REPO_DIR / "weights" / "llama3-tiny-hitchhiker"
# the tiny Llama 4 the notebook's last section reads (generators/train_llama4_checkpoint.py)
EMBEDDED_LLAMA4 = REPO_DIR / "weights" / "llama4-tiny-hitchhiker"
GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file


class TokenizerSource(NamedTuple):
    """What a checkpoint hands the tokenizer (tokenizer_setup.load_tokenizer): its vocabulary's
    kind — "tokenizer.model" (Meta's, tiktoken's file), "tokenizer.json" (Hugging Face's) or
    "gguf" (a GGUF file's metadata) — and the file that holds it. A tokenizer.model that is
    not there is the one in `llama-models`."""

    kind: str
    path: Path


def describe(path: Path) -> str:
    """A path as a reader would want to see it: relative when inside the repo."""
    try:
        return str(Path(path).resolve().relative_to(REPO_DIR))
    except ValueError:
        return str(path)


def find_checkpoint_dir(value: str | None = None) -> Path:
    """The checkpoint folder from LLAMA3_CKPT (or `value`), else the embedded one."""
    if value is None:
        value = settings.read().get("LLAMA3_CKPT")
    if model_ids.looks_like_ollama_name(value.strip()):  # llama3.2:1b
        return model_ids.ollama_blob(value.strip())
    if model_ids.looks_like_model_id(value.strip()):  # meta-llama/Llama-3.2-1B
        value = str(model_ids.resolve(value.strip()))
    folder = Path(value).expanduser() if value.strip() else EMBEDDED_CHECKPOINT
    if not folder.exists():
        raise CheckpointError(
            f"Checkpoint folder {folder} does not exist: set LLAMA3_CKPT to the folder that holds "
            "consolidated.00.pth and params.json, a Hugging Face model folder, a GGUF file, a "
            "model id such as meta-llama/Llama-3.2-1B or an Ollama name such as llama3.2:1b."
        )
    if is_gguf(folder):
        return folder  # llama.cpp's format: one file; gguf_files reads it
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


def is_gguf(path: Path) -> bool:
    """A file that starts with GGUF's magic bytes (or is named .gguf: then it is checked)."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() == ".gguf":
        return True
    with open(path, "rb") as file:
        return file.read(4) == GGUF_MAGIC
