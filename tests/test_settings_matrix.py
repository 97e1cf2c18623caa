"""Every combination of the settings that change how weights are read runs the lesson and
predicts what the plain run predicts.

dtype (float32, bfloat16) × quantization (none, int8, int4) × layout (Meta's folder, Hugging
Face's folder, a GGUF file; all three the embedded model, in bf16), and the one-row routing
(LLAMA3_ONE_ROW=fused, unquantized: in float32 the compiled loop over the file's bf16, in
bfloat16 ATen's one-row kernel). One kernel per layout runs the whole notebook (demos off),
each quantized in its own way (`LAYOUTS`: int4 in float32, int4 in bfloat16, int8 in
bfloat16; int8 in float32 runs in tests/test_bad_input.py, on a read-only copy), then, in the
same kernel, makes the setup's decisions anew for each combination and runs the notebook's
own cells from `show-def` to `forward-def` again (`settings_matrix`, below): the layer-0 walk
through `wq.view(…)`, every layer, the answer, and `forward`. bf16 with int8 once stopped at
`heads-view`; in bfloat16 the setup cell's quantized matrices once handed the lesson float32
values. Last, the GGUF layout's kernel opens the embedded model written in each block format
a reader's file holds (Q8_0, Q4_0, and Q4_K_M as llama.cpp makes it at this size) and runs the
same cells on each in both dtypes (`block_files`). The three kernels run at once, one thread
each.
"""

from __future__ import annotations

import itertools
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from plumbing import quantization
from plumbing.checkpoint_files import EMBEDDED_CHECKPOINT
from plumbing.checkpoints import open_checkpoint
from testbeds.gguf_writer import q4_k_m_kind, write_gguf
from testbeds.hf_folder import save_streaming
from testbeds.notebook_kernel import KernelGlobals, in_kernel
from tests.support import shared_runs
from tests.support.notebook_values import (
    NOTEBOOK_UNDER_TEST,
    TENSORS_ONLY,
    cell_text,
    run_and_read,
)

pytestmark = pytest.mark.slow

ANSWER = 2983  # "42": what the embedded model predicts unquantized, in either dtype
COMBINATIONS = [
    {"LLAMA3_DTYPE": dtype, "LLAMA3_QUANTIZE": scheme, "LLAMA3_ONE_ROW": "plain"}
    for dtype, scheme in itertools.product(["float32", "bfloat16"], ["none", "int8", "int4"])
] + [
    {"LLAMA3_DTYPE": dtype, "LLAMA3_QUANTIZE": "none", "LLAMA3_ONE_ROW": "fused"}
    for dtype in ["float32", "bfloat16"]  # the compiled loop; ATen's kernel for one bf16 row
]
# Each layout's kernel runs the whole notebook quantized, one (scheme, compute dtype) each.
LAYOUTS = {
    "meta": ("int4", "float32"),
    "hugging face": ("int4", "bfloat16"),
    "gguf": ("int8", "bfloat16"),
}


# GGUF's block formats a reader's file holds (Ollama: llama3:8b Q4_0, llama3.1:8b Q4_K_M,
# llama3.2:1b Q8_0), each the embedded model, run by the gguf layout's kernel in both dtypes.
BLOCK_FILES = ["Q8_0", "Q4_0", "Q4_K_M"]


def snapshot(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@shared_runs.declared
def matrix():
    """Each layout's kernel: its run, and its `settings_matrix` results; the three at once,
    started with the suite's other shared runs."""
    folder = Path(shared_runs.SHARED.scratch.name) / "settings-matrix"
    folder.mkdir()
    checkpoints = {
        "meta": EMBEDDED_CHECKPOINT,
        "hugging face": save_streaming(EMBEDDED_CHECKPOINT, folder / "hf"),
        "gguf": write_gguf(EMBEDDED_CHECKPOINT, folder / "embedded-bf16.gguf", "BF16"),
    }
    embedded = open_checkpoint(EMBEDDED_CHECKPOINT)
    n_layers = embedded.params["n_layers"]
    mixed = {  # llama.cpp's Q4_K_M at this size: rows too short for K blocks (Q5_0, Q8_0)
        name: q4_k_m_kind(name, n_layers, shape[1])
        for name, shape in embedded.weights.shapes.items()
        if len(shape) == 2
    }
    block_files_made = {
        kind: str(
            write_gguf(
                EMBEDDED_CHECKPOINT,
                folder / f"embedded-{kind.lower()}.gguf",
                "Q5_0" if kind == "Q4_K_M" else kind,
                kind_of=mixed if kind == "Q4_K_M" else None,
            )
        )
        for kind in BLOCK_FILES
    }

    before = snapshot(EMBEDDED_CHECKPOINT)

    def run(layout):
        work = folder / layout.replace(" ", "-")
        work.mkdir()
        scheme, dtype = LAYOUTS[layout]
        settings = {**TENSORS_ONLY, "LLAMA3_CKPT": str(checkpoints[layout])}
        settings |= {"LLAMA3_QUANTIZE": scheme, "LLAMA3_DTYPE": dtype, "OMP_NUM_THREADS": "1"}
        also = [(settings_matrix, COMBINATIONS, str(NOTEBOOK_UNDER_TEST))]
        if layout == "gguf":  # last: it replaces the kernel's model
            also.append((block_files, block_files_made, str(NOTEBOOK_UNDER_TEST)))
        values = run_and_read(work, settings, also=also)
        files = {name: json.loads(file.read_text()) for name, file in values["files"].items()}
        return values, files["settings_matrix"], files.get("block_files")

    with ThreadPoolExecutor(len(LAYOUTS)) as pool:
        futures = {layout: pool.submit(run, layout) for layout in LAYOUTS}
        runs = {layout: future.result() for layout, future in futures.items()}
    assert snapshot(EMBEDDED_CHECKPOINT) == before
    return runs


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_combination_predicts_what_the_plain_run_predicts(matrix, layout):
    _, results, _ = matrix[layout]
    assert len(results) == len(COMBINATIONS)
    for result in results:
        combination = {key: result[key] for key in COMBINATIONS[0]}
        assert result["cells"] == result["forward"] == ANSWER, combination
        assert result["dtype"] == result["LLAMA3_DTYPE"], combination
        quantized = result["LLAMA3_QUANTIZE"] != "none"
        assert result["quantized"].startswith(("int8", "int4") if quantized else "none")
        fused = result["LLAMA3_ONE_ROW"] == "fused"
        routed = ("fused", "ATen") if fused else ("plain",)
        assert result["one_row"].startswith(routed), result["one_row"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_whole_notebook_quantized_predicts_42(matrix, layout):
    (values, _, _), (scheme, dtype) = matrix[layout], LAYOUTS[layout]
    assert values["next_token_id"] == ANSWER
    setup = cell_text(values["notebook"], "prelims-code")
    assert f"computing in {dtype}" in setup
    line = next(line for line in setup.splitlines() if line.startswith("quantized:"))
    matrices = 4 * 7 + 1  # the embedded model: 4 layers of 7, and the output matrix
    numbers = rf"{matrices} matrices: [\d.,]+ MB → [\d.,]+ MB"
    assert re.search(rf"{quantization.SCHEMES[scheme]}, {numbers}", line), line
    assert "fused weight-only kernels" in line, line


@pytest.mark.parametrize("kind", BLOCK_FILES)
def test_each_block_format_predicts_42_in_both_dtypes(matrix, kind):
    # the file's route as the setup says it: Q8_0 and Q4_0 to the int4 kernel (Q8_0 in two
    # halves); the Q5_0 of a Q4_K_M file of this size dequantized when used, its Q8_0 halved
    _, _, results = matrix["gguf"]
    runs = [result for result in results if result["format"] == kind]
    assert [run["dtype"] for run in runs] == ["float32", "bfloat16"]
    route, kernel = {
        "Q8_0": ("Q8_0 to the int4 kernel in two halves", "Q8_0 (as two int4 halves) blocks"),
        "Q4_0": ("Q4_0 to the int4 kernel as stored", "Q4_0 blocks as the file holds them"),
        "Q4_K_M": ("Q5_0 dequantized when used", "Q8_0 (as two int4 halves) blocks"),
    }[kind]
    for run in runs:
        assert run["cells"] == run["forward"] == ANSWER, run
        assert route in run["file"] and kernel in run["quantized"], run


# In the notebook's kernel, after its last cell (sent there as source:
# testbeds/notebook_kernel.py).


@in_kernel
def lesson_again(nb: KernelGlobals, notebook_path: str) -> tuple[int, int]:
    """The notebook's own cells from `show-def` to `forward-def` again in this kernel, with
    the setup's decisions in `nb` (the tokenizer's cells aside: they read no weight); the next
    token by the cells and by `forward`."""
    import types

    import nbformat

    cells = nbformat.read(notebook_path, as_version=4).cells
    ids = [cell.get("id") for cell in cells]
    lesson = cells[ids.index("show-def") : ids.index("forward-def") + 1]
    sources = [
        cell.source
        for cell in lesson
        if cell.cell_type == "code" and not cell.get("id", "").startswith("bpe")
    ]
    # The figures are the plain run's: here `plots` draws nothing. (Laying out a figure, even
    # one closed unrendered, took 6.5 of the 11 s that a layout's eight walks took.)
    plots = nb["plots"]
    drawn = {name: (lambda *_, **__: None) for name in dir(plots) if name[0] != "_"}
    nb["plots"] = types.SimpleNamespace(**drawn)
    try:
        for source in sources:
            exec(compile(source, "lesson", "exec"), nb.namespace)
    finally:
        nb["plots"] = plots
    return nb["next_token_id"], int(nb["forward"](nb["prompt_tokens"]).argmax())


@in_kernel(uses=(lesson_again,))
def settings_matrix(
    nb: KernelGlobals, combinations: list[dict], notebook_path: str, path: str
) -> None:
    """The lesson's main path again under each combination of the settings that change how
    weights are read (LLAMA3_DTYPE, LLAMA3_QUANTIZE, LLAMA3_ONE_ROW): for each, the setup
    cell's decisions are made anew (`run_settings.decide`, `settings.weight_reader`) and the
    lesson runs again (`lesson_again`). Saves each run's next token, by the cells and by
    `forward`, and the setup's lines about it."""
    import os

    from plumbing import run_settings

    results = []
    for combination in combinations:
        os.environ.update(combination)
        settings = run_settings.decide(
            nb["checkpoint_dir"], nb["config"], nb["tokenizer"], nb["model"]
        )
        nb.update(settings=settings, device=settings.device, compute_dtype=settings.dtype)
        nb["weight"] = settings.weight_reader(nb["model"])
        by_cells, by_forward = lesson_again(nb, notebook_path)
        results.append(
            {
                **combination,
                "cells": by_cells,
                "forward": by_forward,
                "dtype": str(settings.dtype).removeprefix("torch."),
                "quantized": settings.quantization_note,
                "one_row": settings.one_row_note,
            }
        )
    with open(path, "w") as file:
        json.dump(results, file)


@in_kernel(uses=(lesson_again,))
def block_files(nb: KernelGlobals, files: dict[str, str], notebook_path: str, path: str) -> None:
    """The lesson again on the embedded model written in each of GGUF's block formats
    (`files`: format → file), in both dtypes: each file opened as the setup cell opens it,
    the setup's decisions made for it, then `lesson_again`. Saves each run's next token and
    the setup's lines about the file's route. Last in the kernel: it replaces the model."""
    import os

    from plumbing import checkpoints, run_settings

    results = []
    for kind, file in files.items():
        checkpoint = checkpoints.open_checkpoint(file)
        for dtype in ("float32", "bfloat16"):
            os.environ.update(
                {"LLAMA3_DTYPE": dtype, "LLAMA3_QUANTIZE": "none", "LLAMA3_ONE_ROW": "plain"}
            )
            model, config = checkpoint.weights, checkpoint.params
            settings = run_settings.decide(file, config, nb["tokenizer"], model)
            nb.update(checkpoint=checkpoint, model=model, config=config, settings=settings)
            nb.update(device=settings.device, compute_dtype=settings.dtype)
            nb["weight"] = settings.weight_reader(model)
            by_cells, by_forward = lesson_again(nb, notebook_path)
            results.append(
                {
                    "format": kind,
                    "LLAMA3_DTYPE": dtype,
                    "cells": by_cells,
                    "forward": by_forward,
                    "dtype": str(settings.dtype).removeprefix("torch."),
                    "file": model.note(),
                    "quantized": settings.quantization_note,
                }
            )
    with open(path, "w") as file:
        json.dump(results, file)
