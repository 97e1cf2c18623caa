"""Quantization: the notebook's int8 and int4 schemes, the fused kernels, and LLAMA3_QUANTIZE.

- The section "Fewer bytes per weight" runs in the shared kernel (tests/conftest.py), which
  then measures every matrix it quantized with the notebook's own functions
  (`measure_section`, below): the error bound of each scheme, the fused
  product against dequantize-then-multiply, and a quality figure computed again.
- plumbing/quantization.py, which LLAMA3_QUANTIZE uses from the setup cell, is checked
  here in-process on random matrices. The whole notebook quantized ("42" under int8 and int4,
  in both dtypes, the checkpoint folder untouched) runs in tests/test_settings_matrix.py,
  whose kernel for each layout starts with one of them.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time

import pytest
import torch

from plumbing import REPO_DIR, gguf_files, quantization
from testbeds.notebook_kernel import KernelGlobals, in_kernel
from tests.support import shared_runs
from tests.support.notebook_values import cell_text, read_in_shared_run
from tests.test_perplexity import perplexities


@pytest.fixture(scope="module")
def section(embedded_run):
    """What `measure_section` below measured in the shared embedded run."""
    return torch.load(embedded_run["files"]["measure_section"], weights_only=True)


# ---- the notebook's own functions, on every matrix it quantized --------------------------------


@pytest.mark.slow  # the shared kernel
def test_every_layer_matrix_and_the_output_is_quantized(section, embedded_run):
    for scheme in ("int8", "int4"):
        names = {name for kind, name in section["matrices"] if kind == scheme}
        assert "output.weight" in names and "tok_embeddings.weight" not in names
        assert sum(name.startswith("layers.0.") for name in names) == 7  # wq wk wv wo w1 w2 w3
        assert not any(name.endswith("norm.weight") for name in names)


@pytest.mark.slow  # the shared kernel
def test_int8_moves_each_weight_half_a_step_at_most(section):
    for (scheme, name), measured in section["matrices"].items():
        if scheme == "int8":
            assert measured["moved_in_steps"] <= 0.5, name
            low, high = measured["range"]
            assert -127 <= low and high <= 127 and 127 in (-low, high), name


@pytest.mark.slow  # the shared kernel
def test_int4_moves_each_weight_half_a_step_except_where_8_is_clamped_to_7(section):
    for (scheme, name), measured in section["matrices"].items():
        if scheme == "int4":
            assert measured["range"] == (-8, 7), name
            assert measured["moved_in_steps"] <= 1.0, name
            assert measured["moved_over_half"] < 0.05, name  # only the clamped ones


@pytest.mark.slow  # the shared kernel
def test_the_kernel_holds_the_notebooks_integers_and_multiplies_as_the_formula(section):
    for key, measured in section["matrices"].items():
        assert measured["holds_the_notebooks"] and measured["zero_blocks_stay_zero"], key
        # The kernels multiply in bfloat16 activations and return bfloat16 results
        # (plumbing/quantization.py says why): rounding of about 2^-8 of the largest value.
        for measure in ("fused_vs_explicit", "one_row_vs_explicit", "bf16_vs_explicit"):
            assert measured[measure] <= 1e-2, (key, measure, measured[measure])


@pytest.mark.slow  # the shared kernel
def test_the_quality_figures_are_computed(section, embedded_run):
    printed = cell_text(embedded_run["notebook"], "quant-quality-table")
    for label, figures in section["printed_quality"].items():
        score, agreement, divergence, p99, p_answer = figures
        line = next(line for line in printed.splitlines() if line.strip().startswith(label))
        assert f"{score:.4g}" in line and f"{agreement:.1%}" in line, line
        assert f"{divergence:.2g}" in line and f"{p99:.2g}" in line, line
        assert f"{p_answer:.3f}" in line, line
    again = section["recomputed_int8_quality"]
    assert again == pytest.approx(section["printed_quality"]["int8"], rel=1e-6)
    int8, int4 = section["printed_quality"]["int8"], section["printed_quality"]["int4"]
    assert int8[1] >= int4[1] and int8[2] < int4[2]  # int8 agrees as often, diverges less
    assert int8[2] <= int8[3]  # the mean KL is below its 99th percentile
    assert int4[4] > 0.9  # "42" keeps its probability


@pytest.mark.slow  # the shared kernel
def test_each_context_counts_once(embedded_run):
    # every held-out sentence opens with <|begin_of_text|>: that context counts once, not 60 times
    text = cell_text(embedded_run["notebook"], "quant-quality-code")
    contexts, sentences = map(int, re.findall(r"(\d+) distinct contexts in (\d+)", text)[0])
    heldout = json.loads(embedded_run["files"]["perplexities"].read_text())["heldout"]
    every_prefix = {tuple(tokens[: i + 1]) for tokens in heldout for i in range(len(tokens) - 1)}
    assert sentences == len(heldout) > 1 and contexts == len(every_prefix)
    assert contexts <= sum(len(tokens) - 1 for tokens in heldout) - (sentences - 1)


@pytest.mark.slow  # the shared kernel
def test_the_section_predicts_42_with_both(embedded_run):
    text = cell_text(embedded_run["notebook"], "quant-run-code")
    assert "int8: next token '42'" in text and "int4: next token '42'" in text, text


# ---- plumbing/quantization.py, in-process -----------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 64), (224, 64), (64, 224), (3, 4096)])
def test_plumbing_bounds_on_random_matrices(shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    w[0] = 0  # a row of zeros, like an untrained token's: integers 0, no NaN
    assert not quantization.int8_rows(w)[0][0].any() and not quantization.int4_groups(w)[0][0].any()
    w[0] = 1e-3
    ints, scales = quantization.int8_rows(w)
    assert ((w / scales - ints).abs() <= 0.5).all()
    ints, scales = quantization.int4_groups(w)
    moved = (w / scales.repeat_interleave(quantization.INT4_GROUP, dim=1) - ints).abs()
    assert (moved <= 1).all() and ints.min() >= -8 and ints.max() <= 7


@pytest.mark.parametrize("scheme", ["int8", "int4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_equals_explicit(scheme, dtype):
    generator = torch.Generator().manual_seed(2)
    w = torch.randn(320, 96, generator=generator)
    matrix = quantization.quantize(w, scheme, "cpu")
    assert matrix.fused
    for x in (torch.randn(96, generator=generator), torch.randn(2, 5, 96, generator=generator)):
        x = x.to(dtype)
        fused = x @ matrix.T
        explicit = x.float() @ quantization.dequantized(matrix.ints, matrix.scales).T
        assert fused.shape == explicit.shape and fused.dtype == dtype
        # bfloat16 activations and results inside the kernel: rounding of about 2^-8
        assert (fused.float() - explicit).abs().max() <= 1e-2 * explicit.abs().max()


@pytest.mark.parametrize("rows", [8, 24, 1])
def test_int4_of_a_height_the_kernel_refuses_is_dequantized_per_use(rows):
    # PyTorch's CPU int4 kernel packs 16 rows at a time: a tiny model's wk of one key/value
    # head of 8 numbers stopped the quantization demo with the converter's RuntimeError
    generator = torch.Generator().manual_seed(3)
    w = torch.randn(rows, 64, generator=generator)
    matrix = quantization.quantize(w, "int4", "cpu")
    assert not matrix.fused
    x = torch.randn(3, 64, generator=generator)
    explicit = x @ quantization.dequantized(matrix.ints, matrix.scales).T
    assert torch.equal(x @ matrix.T, explicit)
    ints, scales = quantization.int4_groups(w)
    assert torch.equal(matrix.ints, ints) and torch.equal(matrix.scales, scales)


def test_int4_keeps_only_what_the_kernel_reads(monkeypatch):
    """Packed a block of rows at a time, as the whole matrix at once; read back exactly; and
    nothing else held: no int8 integers, no float32 scales (the 8B's would be 9 GB more)."""
    w = torch.randn(320, 96, generator=torch.Generator().manual_seed(4))
    ints, scales = quantization.int4_groups(w)
    whole = torch._convert_weight_to_int4pack_for_cpu((ints + 8).to(torch.int32), 1)
    monkeypatch.setattr(quantization, "ROWS_AT_A_TIME", 128)  # 3 blocks, the last one partial
    matrix = quantization.quantize(w, "int4", "cpu")
    assert torch.equal(matrix.packed, whole)
    assert torch.equal(matrix.ints, ints) and matrix.ints.dtype == torch.int8
    assert torch.equal(matrix.scales, scales.to(torch.bfloat16))
    held = [value for value in vars(matrix).values() if isinstance(value, torch.Tensor)]
    assert sum(t.numel() * t.element_size() for t in held) == 320 * 96 // 2 + 320 * 3 * 2 * 2
    assert matrix.held_nbytes == 320 * 96 // 2 + 320 * 3 * 2 * 2  # what the benchmark counts


def every_integer_everywhere(rows: int, columns: int) -> torch.Tensor:
    """0 … 15 [rows × columns]: 7c + 3r modulo 16, every value in each row and (from 16 rows on)
    in each column, no two rows of a tile alike, so that rows paired wrong change the bytes."""
    values = (torch.arange(columns) * 7 + torch.arange(rows)[:, None] * 3) % 16
    assert rows < 16 or all(len(set(column.tolist())) == 16 for column in values.T)
    return values


@pytest.mark.parametrize("rows", [16, 64, 112, 128, 320])
def test_int4_packed_by_byte_operations_as_the_converter_packs(rows):
    """pack_int4 writes the kernel's layout itself, in whole tiles of this CPU's layout, and
    leaves a tail of fewer rows to torch's converter: for every integer -8 … 7 at every place,
    the converter's bytes, contiguous as the kernel needs them."""
    columns = 64
    ints = (every_integer_everywhere(rows, columns) - 8).to(torch.int8)
    packed = quantization.pack_int4(ints)
    assert packed.is_contiguous()
    assert torch.equal(packed, torch._convert_weight_to_int4pack_for_cpu((ints + 8).int(), 1))
    assert torch.equal(quantization.unpack_int4(packed, 32), ints)


def test_the_layout_of_16_rows_is_the_converters_for_a_matrix_of_16_rows():
    """ARM's NEON kernels (4 floats a vector) tile 16 rows, rows 2i and 2i + 1 in a byte. No ARM
    machine runs this suite, but every kernel family packs a matrix of 16 rows that way (its
    only, partial tile, row pair by row pair), so the byte operations are checked on that."""
    ints = every_integer_everywhere(16, 96).to(torch.uint8)
    layout = quantization.Int4Layout(16, adjacent=True)
    assert layout in quantization.INT4_LAYOUTS
    converted = torch._convert_weight_to_int4pack_for_cpu(ints.int(), 1)
    assert torch.equal(quantization._tiles_pack(ints, layout), converted)


def packed_as_the_converter_packs() -> quantization.Int4Layout | None:
    """In a process of one CPU kernel family: the byte operations' bytes are the converter's
    (pack_int4, pack_q4_0, Q8_0's halves and Q4_K's runs, for heights of whole tiles and tails,
    every integer at every place) and read back (unpack_int4); the family's layout (None: the
    converter packs)."""
    for rows in (16, 32, 48, 64, 96, 112, 320):
        ints = (every_integer_everywhere(rows, 64) - 8).to(torch.int8)
        packed = quantization.pack_int4(ints)
        assert torch.equal(packed, torch._convert_weight_to_int4pack_for_cpu((ints + 8).int(), 1))
        assert torch.equal(quantization.unpack_int4(packed, 32), ints)
        places = torch.arange(rows * 2 * 144).view(rows, 2, 144)
        blocks = ((places * 7 + places // 144) % 256).to(torch.uint8)  # every byte at each place
        q4_0 = blocks[..., :18].contiguous()
        packed, _ = quantization.pack_q4_0(q4_0)
        ints, _ = gguf_files.ints_and_scales("Q4_0", q4_0.flatten(1))
        assert torch.equal(packed, quantization.pack_int4(ints))
        q8_0 = blocks[..., :34].contiguous()  # Q8_0: each q = 16·h + l, as [h + 8 | l]
        packed, *_ = quantization._file_groups("Q8_0", q8_0, cpu=True)
        q = gguf_files.ints_and_scales("Q8_0", q8_0.flatten(1))[0]
        halves = torch.cat([(q >> 4) + 8, q & 15], dim=1).to(torch.uint8)
        assert torch.equal(packed, quantization.pack_int4(halves))
        blocks[..., 0:4] = torch.tensor([0.01, 0.02]).half().view(torch.uint8)  # d, dmin
        packed, *_ = quantization._file_groups("Q4_K", blocks, cpu=True)
        assert torch.equal(packed, quantization.pack_int4(gguf_files.q4_k_groups(blocks)[0]))
    return quantization.int4_layout()


def test_the_byte_operations_bytes_are_the_converters_on_this_cpus_kernels():
    assert packed_as_the_converter_packs() in quantization.INT4_LAYOUTS


# PyTorch's CPU kernel families lay the int4 kernel's bytes out differently (tiles of 64 rows
# under AVX-512, 32 under AVX2 and the scalar kernels, these with rows 2i and 2i + 1 in a
# byte), fixed when a process starts: the test above checks this CPU's own; each other family
# it runs, in its own process.
LAYOUT = {
    "avx512": "64 rows, i and i + T/2",
    "avx2": "32 rows, i and i + T/2",
    "default": "32 rows, 2i and 2i + 1",
}


@pytest.mark.slow
@pytest.mark.parametrize("kernels", list(LAYOUT))
def test_each_kernel_familys_bytes_are_the_converters(kernels):
    if not shared_runs.cpu_has(kernels) or kernels == shared_runs.best_kernels():
        pytest.skip(f"{kernels}: not on this CPU, or its own family (the tests above)")
    imports = "import torch\nfrom plumbing import gguf_files, quantization\n"
    code = imports + inspect.getsource(every_integer_everywhere)
    code += inspect.getsource(packed_as_the_converter_packs)
    code += "print(packed_as_the_converter_packs())\n"
    env = {**os.environ, **shared_runs.KERNELS[kernels], "PYTHONPATH": str(REPO_DIR)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == LAYOUT[kernels]


@pytest.mark.parametrize("rows", [16, 64, 112, 320])
def test_int4_read_back_by_byte_operations_as_the_kernel_reads_it(rows):
    """unpack_int4 reads whole tiles with byte operations (the lesson's `wq.view(…)` on an int4
    matrix: 20 ms for the 8B's, where the kernel's identity product took 1 s) and the rest
    with the kernel: the integers the kernel itself multiplies by, at every place."""
    ints = torch.randint(-8, 8, (rows, 96), generator=torch.Generator().manual_seed(rows))
    packed = quantization.pack_int4(ints.to(torch.int8))
    by_kernel = quantization.kernel_unpack_int4(packed, 32)
    assert torch.equal(by_kernel, ints.to(torch.int8))
    read = quantization.unpack_int4(packed, 32)
    assert read.dtype == torch.int8 and torch.equal(read, by_kernel)


def test_int8_holds_its_integers_once():
    # The kernel reads the very integers the matrix keeps: the benchmark's memory target
    # (docs/performance.md) counts them once, with one float32 and one bfloat16 scale per row.
    matrix = quantization.quantize(torch.randn(200, 64), "int8", "cpu")
    assert matrix.packed is matrix.ints
    assert matrix.held_nbytes == 200 * 64 + 200 * 4 + 200 * 2


def test_any_other_use_sees_the_dequantized_values():
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(3))
    matrix = quantization.quantize(w, "int8", "cpu")
    values = quantization.dequantized(matrix.ints, matrix.scales)
    assert torch.equal(matrix.view(4, 16, 32), values.view(4, 16, 32))
    assert torch.equal(matrix[3], values[3]) and tuple(matrix.shape) == (64, 32)
    assert torch.equal(torch.cat([matrix.T]), values.T)
    assert "int8, one scale per row" in repr(matrix)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_any_other_use_is_in_the_compute_dtype(scheme):
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(4))
    matrix = quantization.quantize(w, scheme, "cpu", torch.bfloat16)
    x = torch.randn(3, 32).to(torch.bfloat16)
    assert matrix.view(4, 16, 32).dtype == matrix[0].dtype == torch.bfloat16
    assert (x @ matrix.view(4, 16, 32)[0].T).dtype == torch.bfloat16  # the lesson's per head
    assert (x @ matrix.T).dtype == torch.bfloat16  # the fused kernel
    assert torch.cat([matrix.T]).dtype == torch.bfloat16


def test_the_kernels_refuse_what_they_cannot_take():
    ints, scales = quantization.int4_groups(torch.randn(8, 48), group=16)
    with pytest.raises(ValueError, match="groups of 32, 64, 128 or 256"):
        quantization.QuantizedMatrix(ints, scales, 4, "cpu")


# ---- LLAMA3_QUANTIZE: memory given back -------------------------------------------------------


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="malloc_trim is glibc's",
)
def test_quantizing_gives_freed_memory_back_on_glibc():
    # glibc keeps freed heap blocks: 2.1 GB of them after quantizing the 8B (docs/performance.md)
    assert quantization.return_freed_memory()


@pytest.mark.parametrize("suite_policy", [False, True])
def test_a_demo_gives_freed_memory_back_while_it_runs(monkeypatch, suite_policy):
    # every period while the `with` runs, once more at its end, and no thread left after it;
    # where MALLOC_TRIM_THRESHOLD_ is set (this suite sets it), only the final trim
    trims = []
    monkeypatch.setattr(quantization, "return_freed_memory", lambda: trims.append(1) or True)
    if suite_policy:
        monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", str(2**30))
    else:
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with quantization.freed_memory_returned(period=0.05):
        time.sleep(0.5)
    # its own thread (other tests' threads come and go meanwhile: the shared runs')
    assert not [t for t in threading.enumerate() if t.name == quantization.TRIMMER]
    if suite_policy:
        assert len(trims) == 1
    else:
        assert 5 <= len(trims) <= 12  # about ten periods, and the last trim


# In the notebook's kernel, after its last cell (sent there as source:
# testbeds/notebook_kernel.py).


@in_kernel
def measure_section(nb: KernelGlobals, path: str) -> None:
    """The quantization section's own functions and matrices, measured in its kernel.

    For every matrix of `quantized_models`: the notebook's integers and scales again from
    the file, how far each weight moved in steps of its scale, whether the matrix holds
    those very integers and scales, and the fused product `x @ W.T` against the explicit
    one, `x @ dequantize(ints, scales).T`. And one quality figure recomputed.
    """
    generator = torch.Generator().manual_seed(0)
    measured = {}
    for scheme, matrices in nb["quantized_models"].items():
        quantize = nb["quantize_int8"] if scheme == "int8" else nb["quantize_int4"]
        for name, matrix in matrices.items():
            weights = nb["model"][name].float()
            ints, scales = quantize(weights)
            step = scales.repeat_interleave(weights.shape[1] // scales.shape[1], dim=1)
            zero = step == 0  # a block of zeros (rows of tokens the embedded model never saw)
            step = torch.where(zero, 1.0, step)
            x = torch.randn(3, matrix.shape[1], generator=generator)
            explicit = x @ nb["dequantize"](ints, scales).T
            measured[(scheme, name)] = {
                "range": (int(ints.min()), int(ints.max())),
                "zero_blocks_stay_zero": bool(
                    (ints[zero] == 0).all() and (weights[zero] == 0).all()
                ),
                "moved_in_steps": float((weights / step - ints).abs().max()),
                "moved_over_half": float(((weights / step - ints).abs() > 0.5).float().mean()),
                "holds_the_notebooks": torch.equal(matrix.ints, ints)
                and torch.equal(matrix.scales, scales.to(matrix.scales.dtype)),  # int4: bf16
                "fused_vs_explicit": float((x @ matrix.T - explicit).abs().max())
                / float(explicit.abs().max()),
                "one_row_vs_explicit": float((x[0] @ matrix.T - explicit[0]).abs().max())
                / float(explicit[0].abs().max()),
                "bf16_vs_explicit": float((x.bfloat16() @ matrix.T - explicit).abs().max())
                / float(explicit.abs().max()),
            }
    torch.save(
        {
            "matrices": measured,
            "printed_quality": nb["quantization_quality"],
            "recomputed_int8_quality": nb["quality"]({"int8": nb["quantized_models"]["int8"]})[
                "int8"
            ],
        },
        path,
    )


read_in_shared_run("embedded", measure_section)
read_in_shared_run("embedded", perplexities)  # the held-out sentences, as token ids
