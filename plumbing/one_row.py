"""One-row products straight from the file's bf16: a decode step without converting weights.

Computing in float32 from a bf16 file, the many-row products of a prompt run fastest on a
float32 copy of each weight (weight_loading.WeightReader converts it into a reused buffer).
A decode step multiplies one row, and there converting every weight costs several times the
product itself. So, where LLAMA3_ONE_ROW says so, the reader hands out each matrix as a
`FileDtypeMatrix`: `x @ W.T` with one row of `x` runs `fused_product`, which reads the bf16
weight and multiplies and sums in float32 inside one compiled loop, never making a float32
copy; more rows take the converted path as before. docs/performance.md has the figures.

`torch.compile` writes that loop in C++ for the CPU, so it needs a C++ compiler at run time;
without one, or if compiling fails, the plain path runs and the setup cell says why.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Callable

import torch

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
    """Why fusing has nothing to do in this run, or None when it would read the file's bytes."""
    if quantized:
        return "LLAMA3_QUANTIZE: the quantized kernels read the matrices"
    if device.type != "cpu" or not streaming:
        return "the weights are converted once and kept (not streamed)"
    if compute_dtype != torch.float32:
        return f"computing in {str(compute_dtype).removeprefix('torch.')}, as the file stores"
    if not set(file_dtypes) & {torch.bfloat16, torch.float16}:
        return "the file's matrices are float32 already"
    return None


def decide(choice: str, n_parameters: int, *conditions) -> tuple[bool, str]:
    """Whether one-row products read the file's bytes, and why, in a few words; `conditions`
    are `applies`'s."""
    if choice == "plain":
        return False, "LLAMA3_ONE_ROW=plain"
    if reason := applies(*conditions):
        return False, reason
    if choice == "auto" and n_parameters < AUTO_FROM_PARAMETERS:
        return False, (
            f"auto: under {AUTO_FROM_PARAMETERS / 1e9:.0f}B parameters a step waits on Python, "
            "not on its weights (LLAMA3_ONE_ROW=fused fuses them)"
        )
    if reason := compiler_missing():
        return False, reason
    why = "LLAMA3_ONE_ROW=fused" if choice == "fused" else "auto: float32 from a bf16 file"
    return True, why


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
