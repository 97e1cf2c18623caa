"""Quantized weights for PyTorch's fused weight-only kernels: integers and scales in, `x @ W.T` out.

Plumbing only. The notebook's section "Fewer bytes per weight" derives both schemes from
the raw tensors with its own functions and checks that the integers and scales held here
are exactly the ones it computed. This module exists because LLAMA3_QUANTIZE acts in the
setup cell, before that section: it quantizes (the same few lines), packs the integers
the way the kernels want them, and sends `x @ W.T` to the kernels gpt-fast uses:

- int8, one absmax scale per output row: `torch._weight_int8pack_mm`;
- int4, one scale per group of 32 weights along a row, integers -8 … 7 (llama.cpp's Q4_0
  rule): `torch._weight_int4pack_mm_for_cpu`, whose groups also carry a zero point (0 here).

Both take the activations in bfloat16 (rounded from float32 when the notebook computes in
float32; the result goes back to float32): their float32 paths were 5-14× slower.

Any other use of a quantized matrix (`.view`, indexing, printing its values) works on its
dequantized values, so every cell of the notebook runs on it unchanged. On a device other
than the CPU the product is dequantize-then-multiply: the fused CUDA kernels are not wired.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping

import torch

from plumbing import gguf_files
from plumbing.matrices import Matrix

INT4_GROUP = 32  # weights per scale in int4: llama.cpp's Q4_0 block
KERNEL_DTYPE = torch.bfloat16  # what the CPU kernels multiply the weights with (see below)
SCHEMES = {
    "int8": "int8, one scale per row",
    "int4": f"int4, one scale per {INT4_GROUP} weights",
}


def int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N × K] → integers [N × K] in -127 … 127 and one scale per row [N × 1]."""
    w = w.float()
    scales = w.abs().amax(dim=1, keepdim=True) / 127
    divisors = torch.where(scales > 0, scales, 1.0)  # a row of zeros stays zeros
    return torch.round(w / divisors).to(torch.int8), scales


def int4_groups(w: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """[N × K] → integers [N × K] in -8 … 7 and one scale per group [N × K/group].

    Q4_0's rule: the weight of largest magnitude in the group, with its sign, maps to -8.
    """
    groups = w.float().unflatten(1, (-1, group))  # [N × K/group × group]
    largest = groups.gather(2, groups.abs().argmax(dim=2, keepdim=True))[..., 0]
    scales = largest / -8
    divisors = torch.where(scales != 0, scales, 1.0)  # a group of zeros stays zeros
    ints = torch.clamp(torch.round(groups / divisors[..., None]), -8, 7)
    return ints.flatten(1).to(torch.int8), scales


def dequantized(ints: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """ints · scale in float32; scales [N × groups], each group a run of K/groups weights."""
    groups = ints.float().unflatten(1, (scales.shape[1], -1))
    return (groups * scales[..., None]).flatten(1)


# Rows quantized at a time: a whole 128,256-row output matrix of the 8B would take gigabytes
# of float32 temporaries at once. Every scale is within one row, so
# blocks of rows give the very same integers and scales.
ROWS_AT_A_TIME = 4096
# A file's rows rearranged at a time (from_file_blocks): a few MB of temporaries, which the heap
# reuses; 4,096 rows' took fresh pages every time and twice as long on the 8B
FILE_ROWS_AT_A_TIME = 512
# from_file_blocks gives the heap's freed temporaries back after this many bytes it made
TRIM_EVERY = 256 * 2**20


# The CPU int4 kernel's bytes, as torch._convert_weight_to_int4pack_for_cpu lays them out
# (PyTorch 2.13): rows in tiles of T, 4 × the floats of one of the kernel family's vectors (64
# under AVX-512, 32 under AVX2 and the scalar kernels, 16 under ARM's NEON); in a tile, for each
# column, T/2 bytes, each byte two of the tile's rows: i in the low four bits and i + T/2 in
# the high four under AVX-512 and AVX2, 2i and 2i + 1 under the others. `_tiles_pack` writes
# that with byte operations (the converter takes int32 input, 4 bytes per weight, and is
# slower); `int4_layout` finds the layout once per process, by the converter's own bytes, and
# where none matches, the converter packs.
@dataclasses.dataclass(frozen=True)
class Int4Layout:
    rows: int  # T, a tile's rows
    adjacent: bool  # a byte holds rows 2i and 2i + 1 of its tile; else i and i + T/2

    def byte_halves(self, tiles: torch.Tensor, axis: int) -> torch.Tensor:
        """`tiles`' axis of a tile's T rows, as two (a view): [which of a byte's two rows ×
        which byte of the column's T/2]."""
        if self.adjacent:
            return tiles.unflatten(axis, (self.rows // 2, 2)).transpose(axis, axis + 1)
        return tiles.unflatten(axis, (2, self.rows // 2))

    def __str__(self) -> str:
        return f"{self.rows} rows, {'2i and 2i + 1' if self.adjacent else 'i and i + T/2'}"


INT4_LAYOUTS = (
    Int4Layout(64, adjacent=False),
    Int4Layout(32, adjacent=False),
    Int4Layout(32, adjacent=True),
    Int4Layout(16, adjacent=True),
)
# PyTorch's CPU int4 kernel packs rows 16 at a time and refuses a matrix of another height.
INT4_KERNEL_ROWS = 16


def int4_kernel_takes(n_rows: int, device) -> bool:
    """Whether the fused CPU int4 kernel holds a matrix of `n_rows` rows on `device`; else the
    matrix keeps its integers and is dequantized at each use, as on a GPU (a tiny model's `wk`
    of one key/value head of 8 numbers has 8 rows)."""
    return torch.device(device).type == "cpu" and n_rows % INT4_KERNEL_ROWS == 0


def _tiles_pack(unsigned: torch.Tensor, layout: Int4Layout) -> torch.Tensor:
    """Values 0 … 15 as uint8 [N × K], N a multiple of the layout's T → the kernel's [N × K/2]."""
    n_rows, k = unsigned.shape
    tiles = unsigned.view(n_rows // layout.rows, layout.rows, k // 2, 2)
    halves = layout.byte_halves(tiles, 1)  # [tiles × 2 × T/2 bytes × K/2 pairs × 2]
    packed = halves[:, 0] | (halves[:, 1] << 4)  # [tiles × T/2 × K/2 pairs × 2]
    return packed.permute(0, 2, 3, 1).reshape(n_rows, k // 2).contiguous()


def _converter_pack(unsigned: torch.Tensor) -> torch.Tensor:
    return torch._convert_weight_to_int4pack_for_cpu(unsigned.to(torch.int32), 1)


@functools.cache
def int4_layout() -> Int4Layout | None:
    """The CPU int4 kernel's layout in this process (its kernel family is fixed at start),
    which the byte operations write; None: no layout matches, the converter packs every row."""
    sample = torch.randint(0, 16, (128, 64), generator=torch.Generator().manual_seed(0))
    expected = _converter_pack(sample)
    for layout in INT4_LAYOUTS:
        if torch.equal(_tiles_pack(sample.to(torch.uint8), layout), expected):
            return layout
    return None


def _whole_tiles(n_rows: int) -> int:
    """How many of `n_rows` rows the byte operations write: whole tiles of `int4_layout()`."""
    layout = int4_layout()
    return n_rows // layout.rows * layout.rows if layout else 0


NIBBLES = 0x0F0F_0F0F_0F0F_0F0F  # the low four bits of each of a 64-bit word's bytes
EIGHTS = 0x8888_8888_8888_8888 - 2**64  # 8 in both halves of each byte, as a signed number


def pack_nibble_pairs(
    nibbles: torch.Tensor, out: torch.Tensor | None = None, q8_0: bool = False
) -> torch.Tensor:
    """A file's 4-bit integers as its blocks hold them, bytes [N × runs … × R] (N a multiple of
    the layout's T), byte i of run g holding column 2Rg + i in its low four bits and column
    2Rg + R + i in its high four (Q4_0: R = 16, one run a block; Q4_K: R = 32) → the CPU int4
    kernel's bytes [N × K/2].

    The kernel's byte for column k of a tile joins two of its rows (`Int4Layout`), whose
    nibbles of k sit at the same place in their runs. So the bytes are first turned to have a
    tile's T rows side by side, the first of each byte's two rows (u) before the second (l),
    in one transposing copy; then eight bytes at a time, u's high four bits are exchanged with
    l's low four (a delta swap: t = (u >> 4 ^ l) & 0x0F…, then u ^ t << 4 and l ^ t), which
    makes eight of the kernel's bytes for column 2Rg + i (u's low, l's low) and eight for
    2Rg + R + i (u's high, l's high): five passes over the words (eight with masks and ors).
    `out`: where to write them ([N × K/2] uint8, contiguous), else a new tensor.

    `q8_0`: the bytes are Q8_0's 8-bit q (R = 32, one run a block), each 16·h + l with h in
    -8 … 7 and l in 0 … 15, and the matrix is Int4Halves' [N × 2K]: h + 8 (q's high four bits,
    their top bit flipped) in the first K columns, l in the last K; its bytes [N × K]."""
    n_rows, *runs_shape, run = nibbles.shape  # Q4_K's runs: [blocks × 4], as the file has them
    runs, layout = math.prod(runs_shape), int4_layout()
    n_tiles, tile = n_rows // layout.rows, layout.rows
    tiles = nibbles.reshape(n_tiles, tile, *runs_shape, run)  # a view
    # [tiles × runs × R × 2 × T/2]: each byte's two rows, all T of a tile side by side
    side_by_side = torch.empty((n_tiles, *runs_shape, run, 2, tile // 2), dtype=torch.uint8)
    side_by_side.copy_(layout.byte_halves(tiles, 1).movedim((1, 2), (-2, -1)))
    words = side_by_side.view(torch.int64).view(n_tiles, runs, run, tile // 8)  # 8 rows a word
    half = tile // 16  # the words of the first rows (u)
    upper, lower = words[..., :half], words[..., half:]  # u, l
    if out is None:
        out = torch.empty((n_rows, runs * run), dtype=torch.uint8)  # two columns a byte
    if q8_0:  # [h + 8 | l]: every high half's column, then every low half's
        packed = out.view(torch.int64).view(n_tiles, 2, runs, run, half)
        high, low = packed[:, 0], packed[:, 1]
    else:
        packed = out.view(torch.int64).view(n_tiles, runs, 2, run, half)
        low, high = packed[:, :, 0], packed[:, :, 1]  # columns 2Rg + i, and 2Rg + R + i
    swapped = torch.bitwise_right_shift(upper, 4)
    swapped ^= lower
    swapped &= NIBBLES  # in each byte's low four bits: u's high four XOR l's low four
    torch.bitwise_xor(lower, swapped, out=high)  # l's high four above u's high four
    torch.bitwise_left_shift(swapped, 4, out=low)
    low ^= upper  # l's low four above u's low four
    if q8_0:
        high ^= EIGHTS  # h + 8, for u and for l
    return out


def pack_q4_0(
    blocks: torch.Tensor, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_0 blocks as a file holds them, bytes [N × K/32 × 18] (a float16 scale, then byte j
    holding weight j in its low four bits and weight j + 16 in its high four) → the CPU int4
    kernel's bytes [N × K/2] and the scales [N × K/32] in float32.

    Byte operations only (`pack_nibble_pairs`). Rows past the last whole tile, or a kernel
    whose layout `_tiles_pack` does not write, go through the integers and `pack_int4`.
    `out`: where to write the bytes, if every row is in a whole tile."""
    n_rows = blocks.shape[0]
    scales = gguf_files.block_scales(blocks)
    whole = _whole_tiles(n_rows)
    if whole == n_rows and out is not None:
        return pack_nibble_pairs(blocks[..., 2:], out), scales
    parts = [pack_nibble_pairs(blocks[:whole, :, 2:])] if whole else []
    if whole < n_rows:
        parts.append(pack_int4(gguf_files.ints_and_scales("Q4_0", blocks[whole:].flatten(1))[0]))
    return (torch.cat(parts) if len(parts) > 1 else parts[0]), scales


def pack_int4(ints: torch.Tensor) -> torch.Tensor:
    """Integers -8 … 7 [N × K] (int8; or uint8 0 … 15, already offset by 8, as Q4_0 stores
    them) → the CPU int4 kernel's bytes [N × K/2] (the kernel packs each tile of rows on its
    own: tests/test_quantization.py checks it)."""
    unsigned = ints if ints.dtype == torch.uint8 else (ints + 8).to(torch.uint8)
    whole = _whole_tiles(unsigned.shape[0])
    parts = [_tiles_pack(unsigned[:whole], int4_layout())] if whole else []
    if whole < unsigned.shape[0]:
        parts.append(_converter_pack(unsigned[whole:]))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _tiles_unpack(packed: torch.Tensor) -> torch.Tensor:
    """The kernel's bytes [N × K/2], N a multiple of the layout's T → values 0 … 15 as uint8
    [N × K]: `_tiles_pack` undone, in one transposing pass for each of a byte's two rows."""
    n_rows, k, layout = packed.shape[0], packed.shape[1] * 2, int4_layout()
    tile = layout.rows
    pairs = packed.reshape(n_rows // tile, k // 2, 2, tile // 2).permute(0, 3, 1, 2)
    unsigned = torch.empty((n_rows // tile, tile, k // 2, 2), dtype=torch.uint8)
    halves = layout.byte_halves(unsigned, 1)  # [tiles × 2 × T/2 × K/2 × 2], a view
    torch.bitwise_and(pairs, 15, out=halves[:, 0])  # the first row of each byte
    torch.bitwise_right_shift(pairs, 4, out=halves[:, 1])  # the second
    return unsigned.view(n_rows, k)


def unpack_int4(packed: torch.Tensor, group: int) -> torch.Tensor:
    """The integers -8 … 7 back from the kernel's bytes (int8 [N × K]): for whole tiles, where
    `_tiles_pack` writes the kernel's layout, with byte operations (`_tiles_unpack`); for the
    rest, by the kernel itself (`kernel_unpack_int4`)."""
    whole = _whole_tiles(packed.shape[0])
    parts = [(_tiles_unpack(packed[:whole]).view(torch.int8) - 8)] if whole else []
    if whole < packed.shape[0]:
        parts.append(kernel_unpack_int4(packed[whole:], group))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def kernel_unpack_int4(packed: torch.Tensor, group: int) -> torch.Tensor:
    """The integers back from the kernel's bytes, by the kernel itself: the identity matrix
    times W.T, with every scale 1 and every zero point 0, is W's integers, exact in bfloat16.
    It costs a product with in_features rows (1 s for the 8B's `wq` on 2 cores), so it is
    for what byte operations cannot read (`unpack_int4`) and for checks."""
    n_rows, k = packed.shape[0], packed.shape[1] * 2
    identity = torch.eye(k, dtype=KERNEL_DTYPE)
    blocks = []
    for start in range(0, n_rows, ROWS_AT_A_TIME):
        rows = packed[start : start + ROWS_AT_A_TIME]
        unit = torch.zeros(k // group, rows.shape[0], 2, dtype=KERNEL_DTYPE)
        unit[..., 0] = 1
        blocks.append(torch._weight_int4pack_mm_for_cpu(identity, rows, group, unit).T)
    return torch.cat(blocks).to(torch.int8)


def transposed_into(out: torch.Tensor, values: torch.Tensor, rows: int = 2048) -> None:
    """out[:] = values.T, `rows` of `values` at a time: each block's reads and writes stay in
    the cache (the whole transposed at once took 4× as long: 17 ms for one of the 8B's w1)."""
    for start in range(0, values.shape[0], rows):
        out[:, start : start + rows] = values[start : start + rows].T


class QuantizedMatrix(Matrix):
    """A weight `[out_features × in_features]` held as integers and scales.

    `x @ W.T` runs the fused kernel; anything else works on the dequantized values, in `dtype`
    (the dtype the notebook computes in, so that `W.view(…)` meets activations of its own kind).
    """

    def __init__(
        self,
        ints: torch.Tensor | None,
        scales: torch.Tensor,
        bits: int,
        device,
        packed: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        zeros: torch.Tensor | None = None,
        table: torch.Tensor | None = None,
    ):
        """`packed`: int4's bytes for the CPU kernel, made already (then `ints` may be None).
        `zeros`: int4's zero point per group [out × groups] (a GGUF file's Q4_K: the weight is
        ints·scale + zero); None: 0. `table`: with `packed`, the kernel's table of scales and
        zero points [groups × out × 2] in bfloat16, written already (`assembled`), whose
        columns `scales` and `zeros` then are."""
        self.device, self.dtype = torch.device(device), dtype
        self.shape = (
            tuple(ints.shape) if ints is not None else (packed.shape[0], packed.shape[1] * 2)
        )
        self.scheme = {8: "int8", 4: "int4"}[bits]
        self.group = self.shape[1] // scales.shape[1]
        if bits == 8 and scales.shape[1] != 1:
            raise ValueError("the int8 kernel takes one scale per row")
        if bits == 4 and self.group not in (32, 64, 128, 256):
            raise ValueError(
                f"the int4 kernel takes groups of 32, 64, 128 or 256, not {self.group}"
            )
        self.fused = self.device.type == "cpu" and (
            bits == 8 or int4_kernel_takes(self.shape[0], self.device)
        )
        self.has_zeros = zeros is not None
        if not self.fused:
            self._ints, self._scales = ints.to(self.device), scales.to(self.device)
            self._zeros = zeros.to(self.device) if self.has_zeros else None
        elif self.scheme == "int8":
            self._ints, self._scales = ints, scales
            self.packed, self.kernel_scales = ints, scales[:, 0].to(KERNEL_DTYPE)
        else:
            # Only what the kernel reads is kept: two integers per byte in its own order, and
            # the scales in bfloat16 beside zero points (0 unless given), [groups × out × 2].
            # Keeping the int8 integers and float32 scales too would take 2.25× the memory.
            self.packed = packed if packed is not None else pack_int4(ints)
            if table is not None:
                self.kernel_scales = table
                return
            # written in place: no float32 stack of the two beside them (0.2 GB on the 8B)
            self.kernel_scales = scales.new_zeros((*scales.T.shape, 2), dtype=KERNEL_DTYPE)
            transposed_into(self.kernel_scales[..., 0], scales)
            if zeros is not None:
                transposed_into(self.kernel_scales[..., 1], zeros)

    @property
    def ints(self) -> torch.Tensor:
        """The integers [out × in]; for fused int4, read back from the packed bytes."""
        if self.scheme == "int4" and self.fused:
            return unpack_int4(self.packed, self.group)
        return self._ints

    @property
    def scales(self) -> torch.Tensor:
        """The scales [out × groups]; for fused int4, the bfloat16 ones the kernel reads."""
        if self.scheme == "int4" and self.fused:
            return self.kernel_scales[..., 0].T
        return self._scales

    @property
    def zeros(self) -> torch.Tensor | None:
        """The zero points [out × groups] (None: none); for fused int4, the kernel's bfloat16."""
        if not self.has_zeros:
            return None
        if self.scheme == "int4" and self.fused:
            return self.kernel_scales[..., 1].T
        return self._zeros

    @property
    def nbytes(self) -> int:
        """What a decode step reads: 4 or 8 bits per weight, and the scales."""
        bits = 8 if self.scheme == "int8" else 4
        tables = self.scales.numel() * (2 if self.has_zeros else 1)  # scales, zeros: 16-bit
        return math.prod(self.shape) * bits // 8 + tables * 2

    @property
    def held_nbytes(self) -> int:
        """What it keeps in memory: each tensor it holds once (int8's integers are also what
        its kernel reads; int4's zero points, which its kernel requires, are counted)."""
        storages = [t.untyped_storage() for t in vars(self).values() if torch.is_tensor(t)]
        return sum({storage.data_ptr(): storage.nbytes() for storage in storages}.values())

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        values = dequantized(self.ints, self.scales)
        if self.zeros is not None:
            values = values + self.zeros.float().repeat_interleave(self.group, dim=1)
        return values.to(self.device, dtype or self.dtype)

    def values(self) -> torch.Tensor:
        return self.dequantize()

    def times_transposed(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W.T for x [… × in_features], through the fused kernel."""
        if not self.fused:
            return x @ self.dequantize(x.dtype).T
        # The kernels take bfloat16 activations: given float32, both ran several times slower
        # (docs/performance.md#quantized-decoding-beside-llamacpp).
        rows = x.reshape(-1, x.shape[-1]).to(KERNEL_DTYPE).contiguous()
        if self.scheme == "int8":
            out = torch._weight_int8pack_mm(rows, self.packed, self.kernel_scales)
        else:
            out = torch._weight_int4pack_mm_for_cpu(
                rows, self.packed, self.group, self.kernel_scales
            )
        return out.reshape(*x.shape[:-1], self.shape[0]).to(x.dtype)

    def __repr__(self) -> str:
        return f"QuantizedMatrix({SCHEMES[self.scheme]}, shape {list(self.shape)})"


class Int4Halves(Matrix):
    """A GGUF file's Q8_0 matrix [out × in] for the int4 kernel. Each 8-bit q is 16·high + low,
    two 4-bit numbers, so the matrix is held as one int4 matrix [out × 2·in]: the high halves
    (scale 16·d) then the low ones (scale d, zero point 8·d), and x @ W.T is [x, x] @ that.T,
    one kernel call. What it holds is bf16(d)·q exactly (the kernel keeps its scales in
    bfloat16); 1.25 bytes a weight, where the dequantized bfloat16 matrix takes 2."""

    def __init__(self, halves: QuantizedMatrix, weights, name: str):
        self.halves, self.weights, self.name = halves, weights, name  # the file's blocks, mapped
        self.shape = (halves.shape[0], halves.shape[1] // 2)
        self.scheme, self.group, self.has_zeros = "int4", halves.group, True
        self.fused, self.device, self.dtype = halves.fused, halves.device, halves.dtype

    @property
    def nbytes(self) -> int:
        return self.halves.nbytes

    @property
    def held_nbytes(self) -> int:
        return self.halves.held_nbytes

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """bf16(d)·q from the file's blocks (the values the kernel multiplies by), in `dtype`:
        reading the kernel's bytes back would cost a product with 2·in rows."""
        out = torch.empty(self.shape, dtype=dtype or self.dtype)
        filled = 0
        for rows in self.weights.block_rows(self.name, ROWS_AT_A_TIME):
            ints, scales = gguf_files.ints_and_scales("Q8_0", rows.flatten(1))
            scales = scales.to(KERNEL_DTYPE).float()  # the kernel's bfloat16 scale
            out[filled : filled + len(ints)] = dequantized(ints, scales)
            filled += len(ints)
        return out.to(self.device)

    def values(self) -> torch.Tensor:
        return self.dequantize()

    def times_transposed(self, x: torch.Tensor) -> torch.Tensor:
        return self.halves.times_transposed(torch.cat([x, x], dim=-1))

    def __repr__(self) -> str:
        return f"Int4Halves(Q8_0 as two int4 halves, shape {list(self.shape)})"


def quantize(
    w: torch.Tensor, scheme: str, device, dtype: torch.dtype = torch.float32
) -> QuantizedMatrix:
    """A block of rows at a time; for the CPU's int4 kernel each block is packed at once, so
    the int8 integers of a whole matrix never exist together."""
    rule = int8_rows if scheme == "int8" else int4_groups
    return assembled(
        (rule(rows) for rows in w.split(ROWS_AT_A_TIME)), w.shape[0], scheme, device, dtype
    )


def assembled(
    row_blocks: Iterator[tuple[torch.Tensor, torch.Tensor]],
    n_rows: int,
    scheme: str,
    device,
    dtype: torch.dtype = torch.float32,
    packed: bool = False,
    joined: torch.Tensor | None = None,
) -> QuantizedMatrix:
    """One matrix from its (integers, scales) a block of rows at a time: quantized here, or a
    file's own blocks (a GGUF file's Q4_0, as they are). `packed`: the blocks are the CPU int4
    kernel's bytes already (pack_q4_0's), not integers; `joined`: where the blocks' bytes go,
    which those made in place there already are. For the CPU int4 kernel, its table of scales
    and zero points is written a block at a time too (no float32 copy of the whole matrix's)."""
    packing = scheme == "int4" and int4_kernel_takes(n_rows, device)
    block_scales, block_zeros, filled, table, has_zeros = [], [], 0, None, False
    for ints, scales, *zeros in row_blocks:  # a zero point per group too, for Q4_K
        stored = pack_int4(ints) if packing and not packed else ints
        if joined is None:  # the whole matrix's integers, written block by block (no second copy)
            joined = torch.empty((n_rows, *stored.shape[1:]), dtype=stored.dtype)
        target = joined[filled : filled + stored.shape[0]]
        if stored.data_ptr() != target.data_ptr():  # else written in place already
            target.copy_(stored)
        if packing:  # the kernel's table, [groups × out × 2] in bfloat16, a block at a time
            if table is None:
                table = torch.zeros((scales.shape[1], n_rows, 2), dtype=KERNEL_DTYPE)
            rows = table[:, filled : filled + stored.shape[0]]
            transposed_into(rows[..., 0], scales)
            if zeros:
                transposed_into(rows[..., 1], zeros[0])
                has_zeros = True
        else:
            block_scales.append(scales)
            block_zeros += zeros
        filled += stored.shape[0]
    if packing:
        scales, zeros = table[..., 0].T, table[..., 1].T if has_zeros else None
        return QuantizedMatrix(None, scales, 4, device, joined, dtype, zeros, table=table)
    scales = torch.cat(block_scales)
    zeros = torch.cat(block_zeros) if block_zeros else None
    bits = 8 if scheme == "int8" else 4
    return QuantizedMatrix(joined, scales, bits, device, dtype=dtype, zeros=zeros)


def quantizable(name: str, shape: tuple[int, ...], scheme: str, tied: bool) -> bool:
    """The matrices a decode step reads whole: every layer's projections and the output matrix.

    The norms stay as they are (a few thousand numbers, and each sets a whole stream's
    scale); the embedding is read one row per token, so its size costs a step nothing,
    unless it is also the (tied) output matrix. int4 needs rows that split into whole groups.
    """
    if len(shape) != 2 or (name == "tok_embeddings.weight" and not tied):
        return False
    return scheme == "int8" or shape[1] % INT4_GROUP == 0


def quantize_checkpoint(
    weights, scheme: str, device, dtype: torch.dtype = torch.float32, held=()
) -> tuple[dict[str, QuantizedMatrix], str]:
    """Every matrix a step reads whole, quantized one at a time from the memory-mapped file
    (one float copy of one tensor in memory at a time); and a line that says what it cost.
    `dtype`: the compute dtype, in which any use but `x @ W.T` sees the matrix; `held`: names
    left out (a file's blocks, taken as they are)."""
    started = time.perf_counter()
    shapes = getattr(weights, "shapes", None) or {n: tuple(t.shape) for n, t in weights.items()}
    tied = "output.weight" not in shapes
    matrices, source_bytes = {}, 0
    for name, shape in shapes.items():
        if quantizable(name, shape, scheme, tied) and name not in held:
            tensor = weights[name]  # read from the file now, dropped after this step
            source_bytes += tensor.numel() * tensor.element_size()
            matrices[name] = quantize(tensor, scheme, device, dtype)
            return_freed_memory()  # else the freed temporaries pile up in the heap
    seconds = time.perf_counter() - started
    kept_bytes = sum(matrix.nbytes for matrix in matrices.values())
    kernel = "fused weight-only kernels" if torch.device(device).type == "cpu" else "dequantized"
    return matrices, (
        f"{SCHEMES[scheme]}, {len(matrices)} matrices: {source_bytes / 1e6:,.1f} MB → "
        f"{kept_bytes / 1e6:,.1f} MB in {seconds:.1f} s ({kernel})"
    )


def _file_groups(
    kind: str, rows: torch.Tensor, cpu: bool, out: torch.Tensor | None = None
) -> tuple:
    """One block of a file's rows → (the kernel's bytes on the CPU, else the integers q − 8),
    the scales, and for Q4_K and Q8_0 the zero points (Q8_0: as Int4Halves holds it).
    `out`: where the kernel's bytes may be written, [rows × K/2] (Q8_0's halves: [rows × K])."""
    if kind == "Q4_0":
        return pack_q4_0(rows, out) if cpu else gguf_files.ints_and_scales("Q4_0", rows.flatten(1))
    if kind == "Q8_0":  # q = 16·h + l: a row of [h | l − 8], 2K integers of -8 … 7, offset by 8
        n_rows, n_blocks, _ = rows.shape
        scales = gguf_files.block_scales(rows)
        zeros = torch.cat([torch.zeros_like(scales), 8 * scales], dim=1)  # low: (l − 8)·d + 8d
        scales = torch.cat([16 * scales, scales], dim=1)
        # only where the CPU's kernel takes the matrix (from_file_blocks): the kernel's bytes
        q = rows[..., 2:]  # the int8 q as bytes, two's complement: h + 8 is the high four bits
        if int4_layout() and n_rows % int4_layout().rows == 0:
            return pack_nibble_pairs(q, out, q8_0=True), scales, zeros
        halves = torch.empty((n_rows, 2, n_blocks, gguf_files.BLOCK), dtype=torch.uint8)
        torch.bitwise_xor(q >> 4, 8, out=halves[:, 0])  # h + 8: 0 … 15
        torch.bitwise_and(q, 15, out=halves[:, 1])  # l = (l − 8) + 8: 0 … 15
        return pack_int4(halves.view(n_rows, -1)), scales, zeros
    if cpu and int4_layout() and rows.shape[0] % int4_layout().rows == 0:
        # a 144-byte block's last 128 bytes: four runs of 32 bytes, as pack_nibble_pairs reads
        nibbles = rows[..., 16:].unflatten(-1, (4, 32))  # [rows × blocks × 4 × 32], a view
        return pack_nibble_pairs(nibbles, out), *gguf_files.q4_k_scales_and_zeros(rows)
    unsigned, scales, zeros = gguf_files.q4_k_groups(rows)
    ints = pack_int4(unsigned) if cpu else unsigned.to(torch.int8) - 8
    return ints, scales, zeros


def from_file_blocks(weights, device, dtype: torch.dtype = torch.float32, others: bool = True):
    """The matrices whose blocks the int4 kernel takes as the file holds them (a GGUF file's
    Q4_0 and Q4_K: `weights.kernel_ready`), made with torch, never through float32 copies;
    with `others`, the block-format matrices no kernel takes (Q6_K …) dequantized into `dtype`
    and kept; all in a background thread (MadeInTheBackground); and a line that says what it
    takes (None: nothing)."""
    tied = "output.weight" not in weights.shapes
    names = [
        name
        for name in getattr(weights, "kernel_ready", [])
        if quantizable(name, weights.shapes[name], "int4", tied)
        # Q8_0's two halves only where the kernel runs them; elsewhere (a GPU) dequantized
        and (weights.formats[name] != "Q8_0" or int4_kernel_takes(weights.shapes[name][0], device))
    ]
    # the rest a step reads whole, dequantized once as the weight reader would at first use
    dequantized = [
        name
        for name, kind in getattr(weights, "formats", {}).items()
        if others
        and kind in gguf_files.BLOCK_FORMATS
        and name not in names
        and name not in getattr(weights, "heads", {})  # Qwen3's q, k: reordered when read
        and quantizable(name, weights.shapes[name], "int8", tied)
    ]
    if not names and not dequantized:
        return {}, None

    def made(name: str) -> Matrix:
        kind, (n_rows, k) = weights.formats[name], weights.shapes[name]
        packs = int4_kernel_takes(n_rows, device)  # else the integers, dequantized per use
        # the kernel's bytes written where they stay, block by block: each block's own buffers
        # would be fresh pages at every block, which cost more than the work
        width = k if kind == "Q8_0" else k // 2  # Q8_0's halves: 2K columns, two a byte
        joined = torch.empty((n_rows, width), dtype=torch.uint8) if packs else None
        blocks = (
            _file_groups(kind, rows, packs, joined[start : start + len(rows)] if packs else None)
            for start, rows in zip(
                range(0, n_rows, FILE_ROWS_AT_A_TIME),
                weights.block_rows(name, FILE_ROWS_AT_A_TIME),
                strict=True,
            )
        )
        matrix = assembled(blocks, n_rows, "int4", device, dtype, packs, joined)
        return Int4Halves(matrix, weights, name) if kind == "Q8_0" else matrix

    def dequantized_copy(name: str) -> torch.Tensor:
        return weights[name].dequantized(dtype, device)

    makers = {name: functools.partial(made, name) for name in names}
    makers |= {name: functools.partial(dequantized_copy, name) for name in dequantized}
    matrices = MadeInTheBackground({name: makers[name] for name in in_use_order(list(makers))})
    parts = []
    if names:
        other = sum(not int4_kernel_takes(weights.shapes[name][0], device) for name in names)
        kernel = "fused int4 kernel" if other == 0 else f"{other} dequantized when used"
        kinds = "/".join(sorted({weights.formats[name] for name in names}))
        kinds = kinds.replace("Q8_0", "Q8_0 (as two int4 halves)")
        stored = sum(weights.tensors[name].n_bytes for name in names)
        parts.append(
            f"{SCHEMES['int4']}: {len(names)} matrices' {kinds} blocks as the file holds them "
            f"({stored / 1e6:,.1f} MB), rearranged for the {kernel}"
        )
    if dequantized:
        kinds = "/".join(sorted({weights.formats[name] for name in dequantized}))
        into = str(dtype).removeprefix("torch.")
        parts.append(f"{len(dequantized)} {kinds} matrices dequantized to {into}")
    return matrices, (
        "; ".join(parts) + ": in the background while the notebook goes on, each matrix "
        "waited for at its first use"
    )


def in_use_order(names: list[str]) -> list[str]:
    """The matrices in the order a forward pass reads them: layer by layer, then the rest."""

    def place(name: str) -> float:
        parts = name.split(".")
        return int(parts[1]) if parts[0] == "layers" else math.inf

    return sorted(names, key=place)  # sorted() keeps each layer's own order


class MadeInTheBackground(Mapping):
    """Matrices made one by one by a thread of their own, in the order given, while the notebook
    goes on: reading one waits for it alone (and for those before it), never for the rest.

    A GGUF file's blocks take seconds to rearrange for the int4 kernel (the 8B's Q4_0, 4.2 GB of
    bytes); the first cells read layer 0 alone, so setup need not wait for the other 31 layers.
    Torch's operations let go of Python's lock, so the thread runs beside the cells. A failure
    is raised where the failed matrix is read. `finish()` waits for all of them: the seconds
    from the start to the last."""

    def __init__(self, makers: dict[str, Callable[[], Matrix]]):
        self._makers, self._made, self._failed = makers, {}, None
        self._changed, self._stop = threading.Condition(), threading.Event()
        self._started, self.seconds = time.perf_counter(), None
        self._thread = threading.Thread(target=self._make_all, name="gguf blocks", daemon=True)
        _running.append(self)
        self._thread.start()

    def _make_all(self) -> None:
        since_trim = 0
        try:
            for name, make in self._makers.items():
                if self._stop.is_set():
                    raise RuntimeError("the process is ending: no more matrices are made")
                matrix = make()
                with self._changed:
                    self._made[name] = matrix
                    self._changed.notify_all()
                # the freed temporaries, back to the system every TRIM_EVERY bytes made: at the
                # end alone they pile up in the heap (1 GB on the 8B); after every matrix, 3 s more
                since_trim += matrix.nbytes
                if since_trim >= TRIM_EVERY:
                    since_trim = 0
                    return_freed_memory()
            return_freed_memory()
            self.seconds = time.perf_counter() - self._started
        except BaseException as error:  # raised again where the notebook reads it
            with self._changed:
                self._failed = error
                self._changed.notify_all()
        finally:
            with contextlib.suppress(ValueError):
                _running.remove(self)

    def __getitem__(self, name: str) -> Matrix:
        made = self._made.get(name)  # made already: no lock (a decode step reads 200 of them)
        if made is not None:
            return made
        if name not in self._makers:
            raise KeyError(name)
        with self._changed:
            self._changed.wait_for(lambda: name in self._made or self._failed is not None)
            if name in self._made:
                return self._made[name]
            raise self._failed

    def __contains__(self, name) -> bool:  # known at once: nothing waits
        return name in self._makers

    def __iter__(self) -> Iterator[str]:
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)

    def finish(self) -> float:
        """Wait for every matrix; the seconds the thread took from the start to the last."""
        self._thread.join()
        if self._failed is not None:
            raise self._failed
        return self.seconds

    def stop(self) -> None:
        """Make no more (at the interpreter's exit: a thread still inside torch then crashes)."""
        self._stop.set()
        self._thread.join()


_running: list[MadeInTheBackground] = []
atexit.register(lambda: [made.stop() for made in list(_running)])


def return_freed_memory() -> bool:
    """Give the memory the quantization freed back to the system; whether the C library could.

    glibc's allocator keeps freed blocks of the heap for later use, gigabytes of them after
    quantizing the 8B (docs/performance.md#quantized-decoding-beside-llamacpp), until
    `malloc_trim(0)`. Elsewhere (macOS, Windows) nothing is done.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)  # the symbols the process has loaded, libc's among them
    except (OSError, AttributeError, TypeError):  # no glibc: its allocator decides alone
        return False
    return True


# How often a demo's freed memory goes back to the system while it runs (freed_memory_returned).
TRIM_PERIOD = 0.25


TRIMMER = "freed memory returned"  # its thread's name


@contextlib.contextmanager
def freed_memory_returned(period: float = TRIM_PERIOD) -> Iterator[None]:
    """Inside the `with`, what is freed goes back to the system every `period` seconds, and
    all of it at the end.

    glibc keeps what a demo frees in its heap, as holes between live buffers of other sizes,
    and the heap grows around them: the quality table's `[positions × vocab]` logits, a
    different size each sentence, took the kernel from 0.57 GB to 1.03–1.11 GB while holding
    about 0.1 GB at a time. A second thread trims the heap every `period` seconds (ctypes lets
    go of Python's lock while the C library works): 0.65 GB, 2.85 s instead of 2.6 s
    (docs/performance.md#the-whole-notebook). Where MALLOC_TRIM_THRESHOLD_ is set (the test
    suite keeps freed buffers, for speed), that choice stands: only the final trim is made.
    """
    stop = threading.Event()

    def trim_until_stopped() -> None:
        while not stop.wait(period):
            return_freed_memory()

    trimmer = None
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        trimmer = threading.Thread(target=trim_until_stopped, name=TRIMMER, daemon=True)
        trimmer.start()
    try:
        yield
    finally:
        stop.set()
        if trimmer is not None:
            trimmer.join()
        return_freed_memory()


class QuantizedReader:
    """`weight(name)` with quantized matrices: those it holds, else what `fallback` reads."""

    def __init__(self, matrices: dict[str, QuantizedMatrix], fallback):
        self.matrices, self.fallback = matrices, fallback

    def __call__(self, name: str):
        return self.matrices[name] if name in self.matrices else self.fallback(name)

    def rows(self, name: str, index):  # the embedding's rows, from the file even when tied
        return self.fallback.rows(name, index)

    def in_row_blocks(self, name: str) -> Iterator:
        if name in self.matrices:
            yield self.matrices[name]
        else:
            yield from self.fallback.in_row_blocks(name)
