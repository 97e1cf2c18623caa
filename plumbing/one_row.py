"""One-row products straight from the file's bf16: a decode step without converting weights.

Computing in float32 from a bf16 file, the many-row products of a prompt run fastest on a
float32 copy of each weight (weight_loading.WeightReader converts it into a reused buffer).
A decode step multiplies one row, and there converting every weight costs several times the
product itself. So, where LLAMA3_ONE_ROW says so, the reader hands out each matrix as a
`FileDtypeMatrix`: `x @ W.T` with one row of `x` runs `fused_product`, which reads the bf16
weight and multiplies and sums in float32 inside one compiled loop, never making a float32
copy; more rows take the converted path as before. The figures:
docs/performance.md#one-row-products-from-the-files-bytes.

`torch.compile` writes that loop in C++ for the CPU, so it needs a C++ compiler at run time;
without one, or if compiling fails, the plain path runs and the setup cell says why.

Computing in bf16 on a CPU that multiplies it natively, there is nothing to convert, but two
kernels can take a one-row product: oneDNN's (PyTorch's default) and ATen's own
matrix-vector kernel. Which is faster differs between such machines
(docs/performance.md#number-formats-on-the-cpu), so `auto` times both once, on the model's
largest matrix shape, and an `AtenOneRowMatrix` routes one row to ATen where it won.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping

import torch

from plumbing import tensor_names
from plumbing.matrices import Matrix

# LLAMA3_ONE_ROW's values: `auto` fuses where it pays, `fused` wherever it applies, `plain`
# never. Small models wait on Python's few hundred operations per step, not on reading their
# weights, so `auto` fuses from this many parameters on (the rule that also skips the demos).
CHOICES = ("auto", "fused", "plain")
AUTO_FROM_PARAMETERS = 1_000_000_000
FUSED_ROWS = 1  # products of this many rows or fewer read the file's bytes


def product(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [rows × in] float32, w [out × in] as stored → x @ w.T [rows × out], summed in float32."""
    return (x[:, None, :] * w.to(torch.float32)).sum(-1)


@functools.cache
def compiled_product() -> Callable:
    """`product`, compiled once per weight shape at its first call (torch.compile). A model
    has six or seven shapes; dynamo's default limit of 8 per function would leave no room
    for a second model in the same process."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(product, dynamic=False, fullgraph=True)


def fused_product(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return compiled_product()(x, w)


def compiler_missing() -> str | None:
    """Why torch.compile cannot build CPU code here, or None: it needs a C++ compiler."""
    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler}) found, which torch.compile needs on the CPU"
    return None


def applies(device, compute_dtype, file_dtypes, streaming: bool, quantized: bool) -> str | None:
    """Why no one-row route has anything to do in this run, or None. `file_dtypes`: those of
    the file's matrices."""
    if quantized:
        return "LLAMA3_QUANTIZE: the quantized kernels read the matrices"
    if device.type != "cpu" or not streaming:
        return "the weights are converted once and kept (not streamed)"
    if compute_dtype not in (torch.float32, torch.bfloat16):
        return f"computing in {compute_dtype}"
    if compute_dtype == torch.float32 and not set(file_dtypes) & {torch.bfloat16, torch.float16}:
        return "the file's matrices are float32 already"
    if compute_dtype == torch.bfloat16 and torch.bfloat16 not in set(file_dtypes):
        return "computing in bfloat16 from a file with no bfloat16 matrices"
    return None


def decide(
    choice: str, n_parameters: int, native_bf16: bool, *conditions
) -> tuple[str | None, str]:
    """The one-row route — "fused" (float32: the compiled loop over the file's bf16),
    "aten?" (bfloat16: ATen's kernel if it wins when timed in setup) or None — and why, in a
    few words. `native_bf16`: whether the CPU multiplies bf16 in hardware; `conditions` are
    `applies`'s."""
    if choice == "plain":
        return None, "LLAMA3_ONE_ROW=plain"
    if reason := applies(*conditions):
        return None, reason
    if choice == "auto" and n_parameters < AUTO_FROM_PARAMETERS:
        return None, (
            f"auto: under {AUTO_FROM_PARAMETERS / 1e9:.0f}B parameters a step waits on Python, "
            "not on its weights (LLAMA3_ONE_ROW=fused routes them)"
        )
    forced = choice == "fused"
    if conditions[1] == torch.bfloat16:  # the compute dtype: nothing to convert
        if not (native_bf16 or forced):
            return None, "auto: bf16 without native bf16 products, oneDNN's kernel"
        return ("aten" if forced else "aten?"), (
            "LLAMA3_ONE_ROW=fused" if forced else "auto: the faster of oneDNN and ATen, timed"
        )
    if reason := compiler_missing():
        return None, reason
    return "fused", "LLAMA3_ONE_ROW=fused" if forced else "auto: float32 from a bf16 file"


def one_row_seconds(shape: tuple[int, int], repeats: int = 3) -> dict[str, float]:
    """One bf16 row times a bf16 `shape` matrix, through oneDNN and through ATen: the best of
    `repeats` seconds each (the matrix as large as the model's largest). The values do not
    change the time, so they are a constant: filling the 8B's [14336 × 4096] with random
    numbers took 0.32 s, with one number 0.03 s, and the timing itself about 0.05 s."""
    w = torch.full(shape, 1 / 64, dtype=torch.bfloat16)
    x = torch.full((1, shape[1]), 1 / 2, dtype=torch.bfloat16)
    seconds = {}
    for kernel, enabled in (("oneDNN", True), ("ATen", False)):
        with torch.backends.mkldnn.flags(enabled=enabled):
            x @ w.T  # the first call pays for the pages and the kernel's setup
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                x @ w.T
                times.append(time.perf_counter() - started)
        seconds[kernel] = min(times)
    return seconds


def compile_for(shapes: list[tuple[int, int]], file_dtype: torch.dtype) -> tuple[float, str | None]:
    """Compile the fused product for every weight shape a decode step multiplies, once, now:
    the seconds it took, and None, or the reason it failed (then nothing is fused)."""
    started = time.perf_counter()
    try:
        for shape in sorted(set(shapes)):
            fused_product(torch.zeros(1, shape[1]), torch.zeros(shape, dtype=file_dtype))
    except Exception as error:  # a compiler that fails, a missing header …: the plain path
        detail = (str(error).strip().splitlines() or [""])[0][:100]
        failed = f"torch.compile failed ({type(error).__name__}: {detail})"
        return time.perf_counter() - started, failed
    return time.perf_counter() - started, None


def choose_aten(
    weights: Mapping[str, torch.Tensor], route: str, why: str
) -> tuple[str | None, str]:
    """In bf16: ATen's one-row kernel when forced ("aten"), or when it beats oneDNN's, timed
    now on the matrix shape that holds most of the model's weights (the 8B's w1 and w3,
    [14336 × 4096]) ("aten?"); the route and the setup cell's line."""
    if route == "aten":
        return "aten", f"ATen's matrix-vector kernel for one bf16 row, not oneDNN's ({why})"
    weight_by_shape = collections.Counter()
    for shape in tensor_names.tensor_shapes(weights).values():
        if len(shape) == 2:
            weight_by_shape[shape] += math.prod(shape)
    largest = weight_by_shape.most_common(1)[0][0]
    seconds = one_row_seconds(largest)
    timed = ", ".join(f"{kernel} {value * 1e3:.1f} ms" for kernel, value in seconds.items())
    if seconds["ATen"] < seconds["oneDNN"]:
        return "aten", f"ATen's kernel for one bf16 row ({why}: {timed} for {list(largest)})"
    return None, f"plain: oneDNN's kernel for one bf16 row ({why}: {timed} for {list(largest)})"


def compile_for_model(
    weights: Mapping[str, torch.Tensor], why: str, blocks: int
) -> tuple[str | None, str]:
    """Compile the fused one-row product for every matrix shape a decode step reads, now, so
    that its cost is paid once here: whether it is used, and the setup cell's line. `blocks`:
    rows per block of the output matrix as the weight reader streams it."""
    shapes, dtypes = tensor_names.tensor_shapes(weights), tensor_names.tensor_dtypes(weights)
    tied = "output.weight" not in shapes
    read = []
    for name, shape in shapes.items():
        if len(shape) != 2 or (name == "tok_embeddings.weight" and not tied):
            continue
        output = name == "output.weight" or name == "tok_embeddings.weight"
        rows = [min(blocks, shape[0]), shape[0] % blocks] if output else [shape[0]]
        read += [(n, shape[1]) for n in rows if n]
    file_dtype = next(dtypes[name] for name in shapes if len(shapes[name]) == 2)
    seconds, failed = compile_for(read, file_dtype)
    if failed:
        return None, f"plain: {failed}"
    return "fused", (
        f"fused: one-row products read the file's {str(file_dtype).removeprefix('torch.')} and "
        f"sum in float32 ({why}); {len(set(read))} shapes compiled in {seconds:.1f} s"
    )


class AtenOneRowMatrix(Matrix):
    """A bf16 weight used in bf16: one row through ATen's own kernel (oneDNN switched off for
    that product); more rows, and any other use, as PyTorch does by default."""

    def __init__(self, stored: torch.Tensor):
        self.stored, self.shape, self.dtype = stored, stored.shape, stored.dtype

    def values(self) -> torch.Tensor:
        return self.stored

    def times_transposed(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() // x.shape[-1] > FUSED_ROWS:
            return x @ self.stored.T
        with torch.backends.mkldnn.flags(enabled=False):
            return x @ self.stored.T


class FileDtypeMatrix(Matrix):
    """A weight as the file stores it (bf16), used in float32: one row through the fused
    product; more rows, and any other use, on the values `convert(stored)` gives."""

    def __init__(self, stored: torch.Tensor, convert: Callable[[torch.Tensor], torch.Tensor]):
        self.stored, self.convert = stored, convert
        self.shape, self.dtype = stored.shape, torch.float32

    def values(self) -> torch.Tensor:
        return self.convert(self.stored)

    def times_transposed(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] > FUSED_ROWS or x.dtype != torch.float32:
            return x @ self.values().T
        out = fused_product(rows.contiguous(), self.stored)  # [rows × out_features]
        return out.reshape(*x.shape[:-1], self.shape[0])

    def __repr__(self) -> str:
        stored = str(self.stored.dtype).removeprefix("torch.")
        return f"FileDtypeMatrix({stored} read in float32, shape {list(self.shape)})"
