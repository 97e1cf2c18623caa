"""A model's name in LLAMA3_CKPT as the place its files lie — plumbing only.

A Hugging Face model id (`meta-llama/Llama-3.2-1B`) becomes its folder in the local cache;
an Ollama name (`llama3.2:1b`) becomes the GGUF file Ollama downloaded (at the end).

`resolve(model_id)` finds the model in the local Hugging Face cache (`HF_HUB_CACHE`, by
default `~/.cache/huggingface/hub`), offline, and returns its snapshot folder: the files
stay where transformers put them, nothing is copied. A model that is not cached is
downloaded only when LLAMA3_DOWNLOAD=1 says so, and then only the files the notebook reads,
with huggingface_hub's progress bars and the token `hf auth login` stored. Everything that
can go wrong is one sentence that names the fix.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

from tqdm import TqdmWarning

from plumbing import settings
from plumbing.friendly_errors import CheckpointError, SetupError

# huggingface_hub draws its progress bars with tqdm.auto, which warns at import inside a
# Jupyter kernel without ipywidgets ("IProgress not found") and then draws text bars: enough.
warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)

from huggingface_hub import snapshot_download  # noqa: E402  (after the filter above)
from huggingface_hub.errors import (  # noqa: E402
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

# What the notebook reads from a Hugging Face model (Meta's `original/` is left out: the same
# weights again, in the other layout).
NOTEBOOK_FILES = [
    "config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
]
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ModelIdError(SetupError):
    """A model id that cannot become a folder."""


def looks_like_model_id(value: str) -> bool:
    """`org/name`, and no such path on disk (a relative folder `a/b` stays a folder)."""
    return bool(MODEL_ID.match(value)) and not Path(value).expanduser().exists()


def download_allowed() -> bool:
    value = settings.read().get("LLAMA3_DOWNLOAD").strip().lower()
    if value in ("", "0", "no", "false"):
        return False
    if value in ("1", "yes", "true"):
        return True
    raise ModelIdError(
        f"LLAMA3_DOWNLOAD={value!r} is not understood: use 1 (download a model that is not "
        "cached) or leave it unset."
    )


def cache_dir() -> str | None:
    """HF_HUB_CACHE, read now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_CACHE") or None


def resolve(model_id: str) -> Path:
    """The model's snapshot folder in the local cache; downloaded first if LLAMA3_DOWNLOAD=1."""
    where = cache_dir() or "~/.cache/huggingface/hub"
    try:
        cached = snapshot_download(
            model_id, cache_dir=cache_dir(), local_files_only=True, allow_patterns=NOTEBOOK_FILES
        )
        return in_layout(cached)
    except LocalEntryNotFoundError:
        pass
    if not download_allowed():
        raise ModelIdError(
            f"{model_id} is not in the Hugging Face cache ({where}): set LLAMA3_DOWNLOAD=1 to "
            "download the files the notebook reads (config.json, the safetensors, "
            "tokenizer.json), or set LLAMA3_CKPT to a folder."
        ) from None
    print(f"downloading {model_id}: {', '.join(NOTEBOOK_FILES)}", flush=True)
    try:
        folder = snapshot_download(model_id, cache_dir=cache_dir(), allow_patterns=NOTEBOOK_FILES)
    except GatedRepoError:
        raise ModelIdError(
            f"{model_id} is gated: accept its licence on https://huggingface.co/{model_id}, "
            "then log in with `hf auth login` (or set HF_TOKEN) and run again."
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ModelIdError(
            f"{model_id} is not a model on the Hugging Face Hub, or it is private: check the id, "
            "log in with `hf auth login` if it is yours, or set LLAMA3_CKPT to a folder."
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise ModelIdError(
            f"{model_id} could not be downloaded ({type(error).__name__}: no network, or the Hub "
            "refused): download it where there is a network and set LLAMA3_CKPT to its folder."
        ) from None
    return in_layout(folder)


def in_layout(snapshot: str) -> Path:
    """The snapshot folder, or its `original/` when only Meta's files were downloaded."""
    folder = Path(snapshot)
    if not (folder / "config.json").exists() and (folder / "original" / "params.json").exists():
        return folder / "original"
    return folder


# ---- Ollama ----------------------------------------------------------------------------------

OLLAMA_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?:[A-Za-z0-9._-]+$")
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
# A blob's name is its digest: sha256 and 64 hex digits, so that a manifest never names a path
# outside the blobs folder ("../../somewhere").
OLLAMA_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def looks_like_ollama_name(value: str) -> bool:
    """`llama3.2:1b`, `library/llama3:8b`, `someone/model:tag`: a name and a tag, no path."""
    return bool(OLLAMA_NAME.match(value)) and not Path(value).expanduser().exists()


def ollama_models_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or "~/.ollama/models").expanduser()


def ollama_manifest(models: Path, name: str) -> Path:
    """Where Ollama's models folder keeps the manifest of `name` (`llama3:8b`, `someone/x:tag`)."""
    model, tag = name.rsplit(":", 1)
    namespace, model = model.split("/", 1) if "/" in model else ("library", model)
    return models / "manifests" / "registry.ollama.ai" / namespace / model / tag


def ollama_blob(name: str) -> Path:
    """The GGUF file of an Ollama model, in place: manifests/…/NAME/TAG names its blob."""
    models = ollama_models_dir()
    manifest = ollama_manifest(models, name)
    if not manifest.is_file():
        raise CheckpointError(
            f"Ollama has no model {name} in {models} (OLLAMA_MODELS moves that folder): run "
            f"`ollama pull {name}`, or set LLAMA3_CKPT to a checkpoint path."
        )
    try:
        layers = json.loads(manifest.read_text())["layers"]
        digest = next(x["digest"] for x in layers if x.get("mediaType") == OLLAMA_MODEL_LAYER)
    except (
        OSError,
        UnicodeDecodeError,
        json.JSONDecodeError,
        KeyError,
        TypeError,
        AttributeError,  # a layer that is not an object (found by testbeds/fuzz.py)
        StopIteration,
    ):
        raise CheckpointError(
            f"{manifest} is not an Ollama manifest that names a model file: run "
            f"`ollama pull {name}` again."
        ) from None
    if not isinstance(digest, str) or not OLLAMA_DIGEST.match(digest):  # never a path
        raise CheckpointError(
            f"{manifest} names its model file {str(digest)[:80]!r}, not a sha256 digest: run "
            f"`ollama pull {name}` again."
        )
    blob = models / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        raise CheckpointError(
            f"Ollama's manifest for {name} names {blob.name}, which is not in {models / 'blobs'}: "
            f"run `ollama pull {name}` again."
        )
    return blob
