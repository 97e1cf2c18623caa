"""One way in to a checkpoint of any layout: `open_checkpoint(path)` — plumbing only.

    checkpoint = open_checkpoint(checkpoint_files.find_checkpoint_dir())
    checkpoint.reader    the module that reads its layout (meta_checkpoint, hf_checkpoint, …)
    checkpoint.stated    the sizes as the file states them, under params.json's keys, checked
    checkpoint.params    the same with n_kv_heads, head_dim, ffn_hidden, qk_norm, tied_output
                       and context_length filled in
    checkpoint.weights   every tensor by Meta's name, memory-mapped (shapes, dtypes, about)
    checkpoint.tokenizer_source  where its vocabulary is: tokenizer_setup.load_tokenizer's input
    checkpoint.check()   every tensor's shape as the params imply: a one-line summary

Each layout is read by its own module (meta_checkpoint, hf_checkpoint, gguf_files), which
answers the same questions: `looks_like(path)`, `read_params`, `weights` and
`tokenizer_source`, and names itself (`LAYOUT`). The layout is decided once, here, by
`reader_for`: the first reader in READERS that the path looks like. A Llama 4 is the notebook's
last section's to run (`lesson_and_llama4`); each reader tells one (`is_llama4`). Finding the
checkpoint is checkpoint_files' job; judging it, checkpoint_checks'; filling the defaults,
model_sizes'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from plumbing import (
    checkpoint_checks,
    checkpoint_files,
    gguf_files,
    hf_checkpoint,
    meta_checkpoint,
    model_sizes,
)
from plumbing.checkpoint_files import EMBEDDED_CHECKPOINT, EMBEDDED_LLAMA4, TokenizerSource
from plumbing.friendly_errors import CheckpointError
from plumbing.tensor_names import NamedWeights

# The module that reads each layout, asked in this order whether a path looks like it.
READERS: tuple[ModuleType, ...] = (gguf_files, hf_checkpoint, meta_checkpoint)


def reader_for(path: Path) -> ModuleType:
    """The first reader whose layout the path looks like."""
    for reader in READERS:
        if reader.looks_like(path):
            return reader
    layouts = ", ".join(reader.LAYOUT for reader in READERS)
    raise CheckpointError(f"{path} is in none of the layouts this notebook reads ({layouts}).")


@dataclass
class Checkpoint:
    """An opened checkpoint (see the top of this file): nothing of its tensors read yet."""

    path: Path
    reader: ModuleType
    stated: dict
    params: dict
    weights: NamedWeights
    tokenizer_source: TokenizerSource

    @property
    def layout(self) -> str:
        """Which layout, in words."""
        return self.reader.LAYOUT

    def check(self) -> str:
        """Every tensor present with the shape the params imply; a one-line summary."""
        return checkpoint_checks.check_weights(self.weights, self.params)


def read_params(path: Path, reader: ModuleType | None = None, llama4: bool = False) -> dict:
    """The sizes as the checkpoint states them, under params.json's keys, checked (no tensor
    file is opened). `llama4`: a Llama 4 model, and only that, is wanted."""
    reader = reader or reader_for(path)
    stated = reader.read_params(path, llama4=True) if llama4 else reader.read_params(path)
    return checkpoint_checks.check_sizes(stated, reader.sizes_path(path), reader.SPELLING)


def lesson_and_llama4(path: Path | None = None) -> tuple[Path, Path]:
    """The checkpoint the lesson reads and the one its last section, "After Llama 3: Llama 4",
    reads: `path` (LLAMA3_CKPT's, found by checkpoint_files, where None) and the embedded
    Llama 4 — unless `path` is a Llama 4, which only that section runs: then the embedded
    Llama 3 and `path`, its sizes checked now, before the lesson runs."""
    path = Path(path) if path is not None else checkpoint_files.find_checkpoint_dir()
    reader = reader_for(path)
    if not reader.is_llama4(path):
        return path, EMBEDDED_LLAMA4
    read_params(path, reader, llama4=True)
    return EMBEDDED_CHECKPOINT, path


def open_checkpoint(path: Path, llama4: bool = False) -> Checkpoint:
    """The checkpoint's sizes, read and checked, then its tensors, memory-mapped. A Llama 4
    model only with `llama4=True` (the notebook's last section), and then only one."""
    path = Path(path)
    reader = reader_for(path)
    stated = read_params(path, reader, llama4)
    weights = reader.weights(path, stated)
    # Unstated, the output matrix is tied when the files hold none (Meta's never say).
    params = model_sizes.filled(stated, tied_output="output.weight" not in weights)
    return Checkpoint(path, reader, stated, params, weights, reader.tokenizer_source(path))
