"""Read the checkpoint's weights: memory-mapped, shards joined, checked, moved to the device.

Plumbing only. `load_weights` gives the file's tensors by name without reading them into
memory; `check_weights` compares every name and shape with params.json; `WeightReader`
hands the notebook one tensor at a time on its compute device and in its compute dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from plumbing import checkpoint_files, gguf_files, hf_checkpoint
from plumbing.checkpoint_files import CheckpointError, expected_shapes
from plumbing.one_row import AtenOneRowMatrix, FileDtypeMatrix

WEIGHT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _load_one(path: Path) -> dict[str, torch.Tensor]:
    """`torch.load(path, map_location="cpu", mmap=True, weights_only=True)`, with clear errors."""
    try:
        state_dict = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    # torch raises RuntimeError, UnpicklingError, ValueError, EOFError … depending on the damage
    except Exception as error:
        text = str(error)
        if mistake := checkpoint_files.download_mistake(path):
            raise CheckpointError(f"{path} is {mistake}.") from None
        if "Weights only load failed" in text or "weights_only" in text:
            raise CheckpointError(
                f"{path} contains pickled code or objects that are not tensors; loading refused "
                "(weights_only=True), nothing in it was run. Use the file from Meta's "
                "download."
            ) from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: "
            f"{text.splitlines()[0][:120] if text else 'no detail'}); it is truncated, "
            "corrupt or another kind of file — download it again."
        ) from None
    if not isinstance(state_dict, dict) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise CheckpointError(
            f"{path} holds a {type(state_dict).__name__}, not a dictionary of tensors: use the "
            "file from Meta's download."
        )
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
        raise CheckpointError(
            f"unexpected tensor {name} in a sharded checkpoint: this is not a Llama 3 checkpoint "
            "in Meta's layout."
        )
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
                raise CheckpointError(
                    f"tensor {name} is missing from shard {pieces.index(None):02d}: download that "
                    "shard again."
                )
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
    each, joined by `ShardedWeights`. A Hugging Face folder: `hf_checkpoint.HuggingFaceWeights`,
    the safetensors files memory-mapped, under Meta's names.
    """
    if checkpoint_files.layout(checkpoint_dir) == "gguf":
        return gguf_files.GGUFWeights(checkpoint_dir, checkpoint_files.read_params(checkpoint_dir))
    if checkpoint_files.layout(checkpoint_dir) == "huggingface":
        return hf_checkpoint.HuggingFaceWeights(
            checkpoint_dir, checkpoint_files.read_config(checkpoint_dir)
        )
    paths = sorted(Path(checkpoint_dir).glob("consolidated.*.pth"))
    if len(paths) <= 1:
        return _load_one(Path(checkpoint_dir) / "consolidated.00.pth")
    return ShardedWeights([_load_one(path) for path in paths])


def tensor_shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Every tensor's full shape, without reading or assembling any data."""
    if hasattr(state_dict, "shapes"):  # ShardedWeights, HuggingFaceWeights
        return dict(state_dict.shapes)
    return {name: tuple(tensor.shape) for name, tensor in state_dict.items()}


def tensor_dtypes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.dtype]:
    if hasattr(state_dict, "dtypes"):  # HuggingFaceWeights
        return dict(state_dict.dtypes)
    first = state_dict.shards[0] if isinstance(state_dict, ShardedWeights) else state_dict
    return {name: tensor.dtype for name, tensor in first.items()}


def check_weights(state_dict: Mapping[str, torch.Tensor], params: dict) -> str:
    """Every tensor present with the shape params.json implies; returns a one-line summary."""
    shapes, dtypes = tensor_shapes(state_dict), tensor_dtypes(state_dict)
    source = getattr(state_dict, "config_name", "params.json")
    files = "the safetensors files" if source == "config.json" else "consolidated.00.pth"
    files = getattr(state_dict, "files_name", files)
    describe = getattr(state_dict, "describe", str)
    # No output matrix in the files means tied, unless config.json says it is not (params.json never
    # says).
    tied = "output.weight" not in shapes and params.get("tied_output", True)
    expected = expected_shapes(params, tied_output=tied)
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
    n_kv_heads = params.get("n_kv_heads") or params["n_heads"]
    dtype_names = sorted({str(dtype).removeprefix("torch.") for dtype in dtypes.values()})
    shard_note = (
        f", {len(state_dict.shards)} shards" if isinstance(state_dict, ShardedWeights) else ""
    )
    if isinstance(state_dict, gguf_files.GGUFWeights):
        formats = sorted(set(state_dict.formats.values()), key=list(gguf_files.FORMATS).index)
        shard_note = f" as read, GGUF file ({'/'.join(formats)})"
        if any(kind in gguf_files.BLOCK_FORMATS for kind in formats):
            shard_note += ", blocks dequantized at each read"
    if source == "config.json":
        n_files = len(state_dict.handles)
        shard_note += (
            f", Hugging Face layout ({n_files} safetensors file{'s' if n_files > 1 else ''})"
        )
    return (
        f"checkpoint ok: {params['n_layers']} layers, dim {params['dim']}, {params['n_heads']} "
        f"query heads sharing {n_kv_heads} key/value heads,\n"
        f"               vocab {params['vocab_size']:,}, {'tied' if tied else 'separate'} output "
        f"matrix, {'/'.join(dtype_names)}{shard_note}"
    )


class WeightReader:
    """`weight(name)`: one tensor of the checkpoint, on the compute device, in the compute dtype.

    streaming=True (the default on a CPU): read it from the memory-mapped file every time it
    is asked for — the file's pages are already in RAM as page cache, and keeping converted
    copies would double that. streaming=False (the default on a GPU): copy it to the device
    once, at first use, and keep it there.

    Streamed on the CPU in a dtype other than the file's (float32 from bf16), each request
    converts the weight into a buffer. A fresh buffer costs a page fault per 4 KB, which for
    the 8B's feed-forward matrices costs several times the conversion itself
    (benchmarks/cpu_dtypes.py). So buffers are kept and reused, but only once nothing holds
    the tensor last handed out in them: a cell that keeps `wq = weight(...)` keeps its values.

    one_row (LLAMA3_ONE_ROW): "fused": streamed and converted, each matrix is handed out as a
    one_row.FileDtypeMatrix instead, whose one-row products read the file's bytes as they
    are; "aten": in bf16, as a one_row.AtenOneRowMatrix, whose one-row products run ATen's
    kernel instead of oneDNN's.
    """

    # Rows per block when a large matrix is streamed (see in_row_blocks).
    BLOCK_ROWS = 16384

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        device: torch.device,
        dtype: torch.dtype,
        streaming: bool,
        one_row: str | None = None,
    ):
        self.weights, self.device, self.dtype, self.streaming = weights, device, dtype, streaming
        self.one_row = one_row
        self.kept: dict[str, torch.Tensor] = {}
        self.buffers: dict[int, list[torch.UntypedStorage]] = {}  # by size in bytes

    def __call__(self, name: str) -> torch.Tensor:
        if name in self.kept:
            return self.kept[name]
        tensor = self._handed_out(self.weights[name])
        if not self.streaming:
            self.kept[name] = tensor
        return tensor

    def in_row_blocks(self, name: str) -> Iterator[torch.Tensor]:
        """The tensor's rows, a block at a time, each on the device in the compute dtype.

        For the vocabulary-sized output matrix: streamed, only one block is ever converted
        at once (a float32 copy of the 8B's whole matrix would be 2 GB); kept, one block.
        """
        if not self.streaming:
            yield self(name)
            return
        for rows in self.weights[name].split(self.BLOCK_ROWS):
            yield self._handed_out(rows)

    def _handed_out(self, source: torch.Tensor):
        if self.one_row == "fused" and source.dim() == 2 and source.dtype != self.dtype:
            return FileDtypeMatrix(source, self._on_device)
        if self.one_row == "aten" and source.dim() == 2 and source.dtype == self.dtype:
            return AtenOneRowMatrix(self._on_device(source))
        return self._on_device(source)

    def _on_device(self, source: torch.Tensor) -> torch.Tensor:
        converting_on_cpu = self.device.type == "cpu" and source.dtype != self.dtype
        if not (self.streaming and converting_on_cpu and _storage_users is not None):
            return source.to(device=self.device, dtype=self.dtype)
        nbytes = source.numel() * self.dtype.itemsize
        buffers = self.buffers.setdefault(nbytes, [])
        free = [
            storage for storage in buffers if _storage_users(storage._cdata) == 1
        ]  # only this list
        if free:
            storage = free[0]
        else:
            storage = torch.UntypedStorage(nbytes)
            buffers.append(storage)
        return torch.empty(0, dtype=self.dtype).set_(storage, 0, source.shape).copy_(source)


class Weights:
    """`weight(name)` as the notebook calls it: one tensor, through whichever reader it reads
    now (a WeightReader, or a quantization.QuantizedReader).

    `with weight.reading(other):` reads through `other` inside the block — a trained copy's
    tensors, quantized matrices — and through the reader before it once the block ends. The
    notebook's functions look `weight` up as they run, so they follow without a change.
    """

    def __init__(self, reader):
        self.reader = reader

    def __call__(self, name: str):
        return self.reader(name)

    def in_row_blocks(self, name: str) -> Iterator:
        return self.reader.in_row_blocks(name)

    @contextlib.contextmanager
    def reading(self, reader):
        saved, self.reader = self.reader, reader
        try:
            yield
        finally:
            self.reader = saved

    def __getattr__(self, name):  # .matrices, .dtype …: the current reader's
        if name.startswith("_") or name == "reader":
            raise AttributeError(name)
        return getattr(self.reader, name)


# How many tensors and storage objects hold a storage (PyTorch's own count; private, so
# checked for: without it, streamed conversions simply get fresh buffers).
_storage_users = getattr(torch._C, "_storage_Use_Count", None)
