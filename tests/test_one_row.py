"""One-row products straight from the file's bf16 (plumbing/one_row.py, LLAMA3_ONE_ROW).

- The fused product equals today's float32 path (the weight converted, then `x @ W.T`)
  within 1e-5 relative, on every matrix shape of the embedded checkpoint and of Llama 3 8B,
  the output matrix in the row blocks the reader hands out, and on shapes that leave
  remainders (13 × 72, 1 × 200, 4,099 × 24).
- Only one-row products are routed; more rows, and any other use, see the converted values.
- The rule: which runs fuse and which say why not.
- The notebook with LLAMA3_ONE_ROW=fused writes the same tokens as without, with the cache
  and recomputing, and predicts "42"; without a C++ compiler the setup decides the plain path
  and says why, and the model still predicts "42" (in the same kernel, after its last cell).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from plumbing import (
    checkpoint_files,
    checkpoints,
    model_sizes,
    one_row,
    weight_loading,
)
from plumbing.one_row import AtenOneRowMatrix, FileDtypeMatrix
from testbeds import presets
from testbeds.notebook_kernel import KernelGlobals, in_kernel
from tests.support import shared_runs
from tests.support.notebook_values import TENSORS_ONLY, cell_text, run_and_read
from tests.test_generation import generations  # the plain run's, in the shared embedded run

ANSWER = 2983  # "42"
BLOCK = weight_loading.WeightReader.BLOCK_ROWS


# shapes whose rows and columns leave remainders for any vector width and any split of rows
ODD_SHAPES = {(13, 72), (1, 200), (4099, 24)}


def matrix_shapes() -> set[tuple[int, int]]:
    """Every matrix shape a decode step multiplies on the embedded checkpoint and on Llama 3
    8B, the output matrix as the reader hands it out (row blocks and the last, shorter one),
    and ODD_SHAPES."""
    embedded = checkpoints.read_params(checkpoint_files.EMBEDDED_CHECKPOINT)
    shapes = set(ODD_SHAPES)
    for params in (embedded, presets.RELEASES["8b"]):
        for name, shape in model_sizes.expected_shapes(params).items():
            if len(shape) == 2 and name != "tok_embeddings.weight":
                shapes |= {shape} if name != "output.weight" else {(BLOCK, shape[1])}
            if name == "output.weight" and shape[0] % BLOCK:
                shapes.add((shape[0] % BLOCK, shape[1]))
    return shapes


def converted(w: torch.Tensor) -> torch.Tensor:
    return w.to(torch.float32)


@pytest.mark.slow  # compiles a dozen shapes: 5-15 s
def test_the_fused_product_equals_the_float32_path_on_every_shape():
    generator = torch.Generator().manual_seed(0)
    shapes = matrix_shapes()
    assert {(4096, 64), (1280, 64), (224, 64), (32, 64)} <= shapes  # the embedded model's
    assert {(14336, 4096), (4096, 14336), (1280, 4096)} <= shapes  # the 8B's
    worst = {}
    for shape in sorted(shapes):
        w = (torch.randn(shape, generator=generator) * shape[1] ** -0.5).to(torch.bfloat16)
        x = torch.randn(1, shape[1], generator=generator)
        plain = x @ converted(w).T
        fused = x @ FileDtypeMatrix(w, converted).T
        worst[shape] = float((fused - plain).abs().max() / plain.abs().max())
    assert max(worst.values()) <= 1e-5, worst


def test_only_one_row_is_fused_and_any_other_use_is_converted(monkeypatch):
    calls = []
    monkeypatch.setattr(
        one_row, "fused_product", lambda x, w: calls.append(x.shape) or x @ w.float().T
    )
    w = torch.randn(6, 4).to(torch.bfloat16)
    matrix = FileDtypeMatrix(w, converted)
    assert (torch.ones(4) @ matrix.T).shape == (6,)  # a vector: one row
    assert (torch.ones(1, 1, 4) @ matrix.T).shape == (1, 1, 6)  # a batch of one, one column
    assert calls == [(1, 4), (1, 4)]
    two_rows = torch.randn(2, 4)
    assert torch.equal(two_rows @ matrix.T, two_rows @ w.float().T) and len(calls) == 2
    assert matrix.view(2, 3, 4).dtype == torch.float32 and torch.equal(matrix[1], w[1].float())
    assert "bfloat16 read in float32" in repr(matrix)


def test_the_reader_hands_out_file_dtype_matrices_only_where_asked():
    weights = {"a.weight": torch.randn(4, 3).to(torch.bfloat16), "n.weight": torch.ones(3)}
    cpu = torch.device("cpu")
    fused = weight_loading.WeightReader(weights, cpu, torch.float32, True, one_row="fused")
    assert isinstance(fused("a.weight"), FileDtypeMatrix)
    assert not isinstance(fused("n.weight"), FileDtypeMatrix)  # a vector: used as it is
    assert all(isinstance(b, FileDtypeMatrix) for b in fused.in_row_blocks("a.weight"))
    plain = weight_loading.WeightReader(weights, cpu, torch.float32, True)
    assert not isinstance(plain("a.weight"), FileDtypeMatrix)


CPU, BF16, F32 = torch.device("cpu"), torch.bfloat16, torch.float32
AVX2, NATIVE = False, True  # whether the simulated CPU multiplies bf16 in hardware


@pytest.mark.parametrize(
    "choice,parameters,cpu,conditions,route,reason",
    [
        ("auto", 8e9, AVX2, (CPU, F32, {BF16}, True, False), "fused", "float32 from a bf16"),
        ("auto", 8e9, NATIVE, (CPU, F32, {BF16}, True, False), "fused", "float32 from a bf16"),
        ("auto", 16.6e6, AVX2, (CPU, F32, {BF16}, True, False), None, "under 1B parameters"),
        ("fused", 16.6e6, AVX2, (CPU, F32, {BF16}, True, False), "fused", "LLAMA3_ONE_ROW=fused"),
        ("plain", 8e9, AVX2, (CPU, F32, {BF16}, True, False), None, "LLAMA3_ONE_ROW=plain"),
        # in bf16: a CPU that multiplies it natively times oneDNN against ATen in setup
        ("auto", 8e9, NATIVE, (CPU, BF16, {BF16}, True, False), "aten?", "timed"),
        ("auto", 8e9, AVX2, (CPU, BF16, {BF16}, True, False), None, "without native bf16"),
        ("fused", 8e9, AVX2, (CPU, BF16, {BF16}, True, False), "aten", "LLAMA3_ONE_ROW=fused"),
        ("auto", 16.6e6, NATIVE, (CPU, BF16, {BF16}, True, False), None, "under 1B"),
        ("fused", 8e9, NATIVE, (torch.device("cuda"), F32, {BF16}, False, False), None, "kept"),
        ("fused", 8e9, AVX2, (CPU, F32, {BF16}, False, False), None, "not streamed"),
        ("fused", 8e9, AVX2, (CPU, F32, {F32}, True, False), None, "float32 already"),
        ("fused", 8e9, AVX2, (CPU, F32, {BF16}, True, True), None, "LLAMA3_QUANTIZE"),
    ],
)
def test_the_rule(choice, parameters, cpu, conditions, route, reason):
    decided, why = one_row.decide(choice, int(parameters), cpu, *conditions)
    assert decided == route and reason in why, why


@pytest.mark.parametrize("aten_faster", [True, False])
def test_native_bf16_takes_the_kernel_that_was_faster(monkeypatch, aten_faster):
    # both machines seen: ATen 2.5× faster than oneDNN on one, 2× slower on another
    timed = {"oneDNN": 0.005, "ATen": 0.003 if aten_faster else 0.010}
    monkeypatch.setattr(one_row, "one_row_seconds", lambda shape: timed)
    weights = {"big.weight": torch.zeros(8, 4, dtype=BF16), "small.weight": torch.zeros(2, 4)}
    route, line = one_row.choose_aten(weights, "aten?", "auto: timed")
    assert route == ("aten" if aten_faster else None)
    assert "oneDNN 5.0 ms" in line and "[8, 4]" in line


def test_the_aten_route_equals_the_default_product():
    w = torch.randn(300, 64).to(BF16)
    x = torch.randn(1, 64).to(BF16)
    routed = x @ AtenOneRowMatrix(w).T
    assert routed.dtype == BF16 and routed.shape == (1, 300)
    plain = (x.float() @ w.float().T).abs().max()
    assert (routed.float() - (x @ w.T).float()).abs().max() <= 1e-2 * plain  # bf16 rounding


def test_without_a_compiler_the_plain_path_says_why(monkeypatch):
    monkeypatch.setenv("CXX", "/nowhere/c++")
    decided, why = one_row.decide("fused", 10, AVX2, CPU, F32, {BF16}, True, False)
    assert decided is None and "no C++ compiler (/nowhere/c++) found" in why


def test_a_failing_compile_leaves_the_plain_path(monkeypatch):
    def failing(x, w):
        raise RuntimeError("the compiler crashed\nat length")

    monkeypatch.setattr(one_row, "fused_product", failing)
    _, failed = one_row.compile_for([(4, 3)], BF16)
    assert failed == "torch.compile failed (RuntimeError: the compiler crashed)"


@in_kernel
def without_a_compiler(nb: KernelGlobals, path: str) -> None:
    """In the fused run's kernel, after its last cell: the setup's decisions made again
    (`run_settings.decide`, as the setup cell makes them) where no C++ compiler is found, and
    the model's next token through the weights that reader hands out. Saves the setup's
    account of the machine (`settings.details()`, what the `machine-code` cell prints) and
    that token."""
    import os

    from plumbing import run_settings

    compiler, os.environ["CXX"] = os.environ.get("CXX"), "/nowhere/c++"
    try:
        settings = run_settings.decide(
            nb["checkpoint_dir"], nb["config"], nb["tokenizer"], nb["model"]
        )
    finally:
        os.environ.pop("CXX")
        if compiler is not None:  # the kernel's own, as it was
            os.environ["CXX"] = compiler
    nb["weight"] = settings.weight_reader(nb["model"])
    next_token = int(nb["forward"](nb["prompt_tokens"]).argmax())
    with open(path, "w") as file:
        json.dump({"details": settings.details(), "next_token": next_token}, file)


@shared_runs.declared
def notebook_run():
    """The whole notebook (demos off) fused, then in its kernel the setup again with no C++
    compiler (`without_a_compiler`; last: it replaces the kernel's weight reader); started
    with the suite's other shared runs."""
    fused = {**TENSORS_ONLY, "LLAMA3_ONE_ROW": "fused", "OMP_NUM_THREADS": "1"}
    work = Path(shared_runs.SHARED.scratch.name) / "one-row-fused"
    return run_and_read(work, fused, also=[(generations,), (without_a_compiler,)])


@pytest.mark.slow
def test_the_notebook_fused_writes_the_same_tokens(notebook_run, embedded_run):
    run = notebook_run
    assert run["next_token_id"] == ANSWER
    decided = cell_text(run["notebook"], "machine-code")
    assert "one row:    fused: one-row products read the file's bfloat16" in decided
    fused = json.loads(run["files"]["generations"].read_text())
    plain = json.loads(embedded_run["files"]["generations"].read_text())
    assert fused["cached"] == plain["cached"]  # greedy tokens, with the cache
    assert fused["recomputed"] == fused["cached"]  # the cache still equals recomputing


@pytest.mark.slow
def test_without_a_compiler_the_notebook_runs_plain(notebook_run):
    plain = json.loads(notebook_run["files"]["without_a_compiler"].read_text())
    assert plain["next_token"] == ANSWER
    assert "one row:    plain (no C++ compiler (/nowhere/c++) found" in plain["details"]
