"""Hand the notebook the checkpoint's tensors: on its device, in its dtype — plumbing only.

`checkpoints.open_checkpoint` reads the files (memory-mapped, under Meta's names) and checks
them; `WeightReader` hands the notebook one tensor at a time on its compute device and in
its compute dtype, and `Weights` is the `weight(name)` the notebook calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch

from plumbing.one_row import AtenOneRowMatrix, FileDtypeMatrix


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
        self.row_sources: dict[str, torch.Tensor] = {}  # see rows
        self.buffers: dict[int, list[torch.UntypedStorage]] = {}  # by size in bytes

    def __call__(self, name: str) -> torch.Tensor:
        if name in self.kept:
            return self.kept[name]
        tensor = self._handed_out(self.weights[name])
        if not self.streaming:
            self.kept[name] = tensor
        return tensor

    def rows(self, name: str, index) -> torch.Tensor:
        """Rows `index` of a tensor (a list or tensor of row numbers), on the device in the
        compute dtype: the embedding, where a prompt needs only its own tokens' rows.

        Streamed, only those rows are read and converted (the 8B's whole table in float32
        would be 2 GB). A GGUF block format is dequantized once, at the first request, and
        kept, as a cell holding the whole table would keep it.
        """
        if name in self.kept or not self.streaming:
            return self(name)[index]
        if name not in self.row_sources:
            self.row_sources[name] = self.weights[name]  # memory-mapped: a view, no copy
        return self.row_sources[name][index].to(device=self.device, dtype=self.dtype)

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

    def rows(self, name: str, index):
        return self.reader.rows(name, index)

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
