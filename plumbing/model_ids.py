"""A Hugging Face model id in LLAMA3_CKPT (`meta-llama/Llama-3.2-1B`) as a folder — plumbing only.

`resolve(model_id)` finds the model in the local Hugging Face cache (`HF_HUB_CACHE`, by
default `~/.cache/huggingface/hub`), offline, and returns its snapshot folder: the files
stay where transformers put them, nothing is copied. A model that is not cached is
downloaded only when LLAMA3_DOWNLOAD=1 says so, and then only the files the notebook reads,
with huggingface_hub's progress bars and the token `hf auth login` stored. Everything that
can go wrong is one sentence that names the fix.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from tqdm import TqdmWarning

from plumbing.friendly_errors import SetupError

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
    value = os.environ.get("LLAMA3_DOWNLOAD", "").strip().lower()
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
