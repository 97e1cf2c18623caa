"""Hand the notebook the checkpoint's tensors: on its device, in its dtype — plumbing only.

`checkpoints.open_checkpoint` reads the files (memory-mapped, under Meta's names) and checks
them; `WeightReader` hands the notebook one tensor at a time on its compute device and in
its compute dtype, and `Weights` is the `weight(name)` the notebook calls. `reader_for` builds
them as the settings chose (the one-row route timed or compiled, the matrices quantized), and
`float32_reader` the reader training reads the file through.
"""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

from plumbing import one_row, quantization
from plumbing.one_row import AtenOneRowMatrix, FileDtypeMatrix


class ConversionBuffers:
    """The storages streamed weights are converted into, by size in bytes, kept for reuse
    (WeightReader); and, while read_again_in_backward is on, how to read the file's tensor in
    each one again. Readers of one device and dtype may share them: training's float32 reader
    and the notebook's own, where it computes in float32 (float32_reader)."""

    def __init__(self):
        self.by_size: dict[int, list[torch.UntypedStorage]] = {}
        self.sources: dict[int, Callable[[], torch.Tensor]] | None = None


class WeightReader:
    """`weight(name)`: one tensor of the checkpoint, on the compute device, in the compute dtype.

    streaming=True (the default on a CPU): read it from the memory-mapped file every time it
    is asked for — the file's pages are already in RAM as page cache, and keeping converted
    copies would double that. streaming=False (the default on a GPU): copy it to the device
    once, at first use, and keep it there. A GGUF file's block-format matrix that no kernel
    takes as it is (Q8_0, Q6_K …) is kept too, once dequantized: dequantizing it again at
    every use would cost each forward pass seconds (the 8B's Q6_K output matrix alone, 2 s).

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

    # Rows per block when a large matrix is streamed (see in_row_blocks). A loop over the
    # blocks still holds one while the next is converted, so two buffers of a block's size
    # stay in use: 4,096 rows of the 8B's output matrix is its wq's size, 67 MB in float32,
    # whose buffers are there anyway (16,384 rows kept two more of 268 MB).
    BLOCK_ROWS = 4096

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        device: torch.device,
        dtype: torch.dtype,
        streaming: bool,
        one_row: str | None = None,
        pool: ConversionBuffers | None = None,
    ):
        self.weights, self.device, self.dtype, self.streaming = weights, device, dtype, streaming
        self.one_row = one_row
        self.kept: dict[str, torch.Tensor] = {}
        self.row_sources: dict[str, torch.Tensor] = {}  # see rows
        self.pool = pool or ConversionBuffers()  # another reader's of this dtype: shared

    @property
    def buffers(self) -> dict[int, list[torch.UntypedStorage]]:
        return self.pool.by_size

    def __call__(self, name: str) -> torch.Tensor:
        if name in self.kept:
            return self.kept[name]
        source = self.weights[name]
        if self._keeps(source):  # converted once, into a tensor of its own, and kept
            self.kept[name] = source.dequantized(self.dtype, self.device)
            return self.kept[name]
        tensor = self._handed_out(source, functools.partial(self.weights.get, name))
        if not self.streaming:
            self.kept[name] = tensor
        return tensor

    def _keeps(self, source) -> bool:
        """Whether this tensor is kept once converted though the reader streams: a block
        format's, whose every read would dequantize it again."""
        return self.streaming and hasattr(source, "dequantized")

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
        if not self.streaming or name in self.kept or self._keeps(self.weights[name]):
            yield self(name)
            return
        for i, rows in enumerate(self.weights[name].split(self.BLOCK_ROWS)):
            yield self._handed_out(rows, functools.partial(self._row_block, name, i))

    def _row_block(self, name: str, i: int) -> torch.Tensor:
        return self.weights[name].split(self.BLOCK_ROWS)[i]

    def _handed_out(self, source: torch.Tensor, origin: Callable[[], torch.Tensor]):
        """`source` on the device, in the compute dtype; `origin()` gives `source` again (from
        the file: read_again_in_backward keeps it instead of the converted copy)."""
        if self.one_row == "fused" and source.dim() == 2 and source.dtype != self.dtype:
            return FileDtypeMatrix(source, self._on_device)
        if self.one_row == "aten" and source.dim() == 2 and source.dtype == self.dtype:
            return AtenOneRowMatrix(self._on_device(source))
        return self._on_device(source, origin)

    @contextlib.contextmanager
    def read_again_in_backward(self):
        """Inside the block, autograd keeps no converted copy of a weight for the backward pass:
        for each one it keeps how to read it from the file, and reads and converts it again
        when the backward pass needs it.

        Autograd saves every tensor a product's gradient needs: for `x @ W.T` with x on the
        gradient's path, W itself. Streamed and converted (the 8B's bf16 file read in
        float32), every W would stay as a float32 copy until `backward()`: 32 GB. Kept on the
        device, or streamed in the file's own dtype, W is already in memory or in the page
        cache, so it is saved as it is. (Only the CPU's reused conversion buffers are known by
        their address; a weight streamed to a GPU is saved as it is, too.) What is kept is a
        way to read the tensor, not the tensor the file gave: a Hugging Face checkpoint's wq
        and wk come as copies with their rows put back in Meta's order, 1.3 GB for the 8B.
        """
        if not self.streaming:
            yield
            return
        self.pool.sources = sources = {}

        def pack(tensor: torch.Tensor):
            origin = sources.get(tensor.untyped_storage().data_ptr())
            if origin is None or tensor.requires_grad:
                return tensor
            return origin, tensor.size(), tensor.stride(), tensor.storage_offset()

        def unpack(packed):
            if isinstance(packed, torch.Tensor):
                return packed
            origin, size, stride, offset = packed
            return self._on_device(origin(), origin).as_strided(size, stride, offset)

        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                yield
        finally:
            self.pool.sources = None

    def _on_device(
        self, source: torch.Tensor, origin: Callable[[], torch.Tensor] | None = None
    ) -> torch.Tensor:
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
        if self.pool.sources is not None:  # a buffer is never freed: its address is its own
            self.pool.sources[storage.data_ptr()] = origin or (lambda: source)
        return torch.empty(0, dtype=self.dtype).set_(storage, 0, source.shape).copy_(source)


class Overlay:
    """A reader that hands out `tensors[name]` where `tensors` has the name, and `base`'s
    weight elsewhere: a trained copy of every weight, or low-rank adapters over the file's.

    A tensor is handed out as it is, not converted: it is the caller's (a float32 copy that
    autograd trains, say).
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor], base: WeightReader):
        self.tensors, self.base = tensors, base

    def __call__(self, name: str):
        return self.tensors[name] if name in self.tensors else self.base(name)

    def rows(self, name: str, index):
        return self.tensors[name][index] if name in self.tensors else self.base.rows(name, index)

    def in_row_blocks(self, name: str) -> Iterator:
        if name in self.tensors:
            yield self.tensors[name]
        else:
            yield from self.base.in_row_blocks(name)


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


@dataclass
class Built:
    """What `reader_for` built: the notebook's `weight`, the plain reader under it, and what the
    one-row route and quantization came to, for the setup cell's summary."""

    weight: Weights
    plain: WeightReader
    one_row: str | None
    one_row_note: str
    quantization_note: str | None  # None: nothing quantized


def reader_for(
    weights: Mapping[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
    streaming: bool,
    route: str | None,
    route_note: str,
    scheme: str,
) -> Built:
    """`weight(name)` as the settings chose it: one tensor on the device, in the dtype; the
    one-row route settled (compiled, or timed against the plain product: one_row.py); and with
    a quantization scheme, every matrix quantized now, tensor by tensor, and those returned. A
    `Weights`, so that `with weight.reading(other):` can swap it."""
    if route == "fused":
        route, route_note = one_row.compile_for_model(weights, route_note, WeightReader.BLOCK_ROWS)
    elif route is not None:
        route, route_note = one_row.choose_aten(weights, route, route_note)
    plain = WeightReader(weights, device, dtype, streaming, route)
    # a file's blocks that PyTorch's int4 kernel takes as they are (GGUF's Q4_0), by default
    # and, unless a scheme quantizes them, the other block formats' matrices dequantized
    matrices, note = quantization.from_file_blocks(weights, device, dtype, scheme == "none")
    if scheme != "none":
        more, quantized = quantization.quantize_checkpoint(weights, scheme, device, dtype, matrices)
        # a ChainMap: the file's own blocks may still be in the making (MadeInTheBackground)
        matrices = collections.ChainMap(more, matrices) if matrices else more
        note = "; ".join(filter(None, [note, quantized]))
    if not matrices:
        return Built(Weights(plain), plain, route, route_note, note)
    return Built(
        Weights(quantization.QuantizedReader(matrices, plain)), plain, route, route_note, note
    )


def float32_reader(
    weights: Mapping[str, torch.Tensor],
    plain: WeightReader | None,
    device: torch.device,
    streaming: bool,
) -> WeightReader:
    """The checkpoint's tensors in float32, as training reads them. Where `plain` (reader_for's)
    computes in float32 too, the two share its conversion buffers, which would otherwise be
    kept twice (0.5 GB on the 8B)."""
    if plain is None or plain.weights is not weights or plain.dtype != torch.float32:
        return WeightReader(weights, device, torch.float32, streaming)
    if plain.one_row is None:
        return plain  # also what it keeps on a GPU: one float32 copy of each weight, not two
    # its one-row products are not training's, its buffers may be
    return WeightReader(weights, device, torch.float32, streaming, pool=plain.pool)
