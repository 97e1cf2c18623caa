"""One way in to a checkpoint of any layout: `open_checkpoint(path)` — plumbing only.

    checkpoint = open_checkpoint(checkpoint_files.find_checkpoint_dir())
    checkpoint.layout    Layout.META, Layout.HUGGING_FACE or Layout.GGUF
    checkpoint.stated    the sizes as the file states them, under params.json's keys, checked
    checkpoint.params    the same with n_kv_heads, ffn_hidden and tied_output filled in
    checkpoint.weights   every tensor by Meta's name, memory-mapped (shapes, dtypes, about)
    checkpoint.tokenizer_source  where its vocabulary is: tokenizer_setup.load_tokenizer's input
    checkpoint.check()   every tensor's shape as the params imply: a one-line summary

Each layout is read by its own module (meta_checkpoint, hf_checkpoint, gguf_files), which
gives the same three things: `read_params`, `weights` and `tokenizer_source`. The layout is
decided once, by `checkpoint_files.layout`, here. Finding the checkpoint is
checkpoint_files' job; judging it, checkpoint_checks'; filling the defaults, model_sizes'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from plumbing import (
    checkpoint_checks,
    gguf_files,
    hf_checkpoint,
    meta_checkpoint,
    model_sizes,
)
from plumbing.checkpoint_files import Layout, TokenizerSource, layout
from plumbing.tensor_names import NamedWeights

# The module that reads each layout.
READERS: dict[Layout, ModuleType] = {
    Layout.META: meta_checkpoint,
    Layout.HUGGING_FACE: hf_checkpoint,
    Layout.GGUF: gguf_files,
}


@dataclass
class Checkpoint:
    """An opened checkpoint (see the top of this file): nothing of its tensors read yet."""

    path: Path
    layout: Layout
    stated: dict
    params: dict
    weights: NamedWeights
    tokenizer_source: TokenizerSource

    def check(self) -> str:
        """Every tensor present with the shape the params imply; a one-line summary."""
        return checkpoint_checks.check_weights(self.weights, self.params)


def read_params(path: Path, kind: Layout | None = None) -> dict:
    """The sizes as the checkpoint states them, under params.json's keys, checked (no tensor
    file is opened)."""
    reader = READERS[kind or layout(path)]
    stated = reader.read_params(path)
    return checkpoint_checks.check_sizes(stated, reader.sizes_path(path), reader.SPELLING)


def open_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint's sizes, read and checked, then its tensors, memory-mapped."""
    path, kind = Path(path), layout(path)
    stated = read_params(path, kind)
    weights = READERS[kind].weights(path, stated)
    # Unstated, the output matrix is tied when the files hold none (Meta's never say).
    params = model_sizes.filled(stated, tied_output="output.weight" not in weights)
    return Checkpoint(path, kind, stated, params, weights, READERS[kind].tokenizer_source(path))
