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
values. The three kernels run at once, one thread each.
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
from testbeds.gguf_writer import write_gguf
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

    before = snapshot(EMBEDDED_CHECKPOINT)

    def run(layout):
        work = folder / layout.replace(" ", "-")
        work.mkdir()
        scheme, dtype = LAYOUTS[layout]
        settings = {**TENSORS_ONLY, "LLAMA3_CKPT": str(checkpoints[layout])}
        settings |= {"LLAMA3_QUANTIZE": scheme, "LLAMA3_DTYPE": dtype, "OMP_NUM_THREADS": "1"}
        also = [(settings_matrix, COMBINATIONS, str(NOTEBOOK_UNDER_TEST))]
        values = run_and_read(work, settings, also=also)
        return values, json.loads(values["files"]["settings_matrix"].read_text())

    with ThreadPoolExecutor(len(LAYOUTS)) as pool:
        futures = {layout: pool.submit(run, layout) for layout in LAYOUTS}
        runs = {layout: future.result() for layout, future in futures.items()}
    assert snapshot(EMBEDDED_CHECKPOINT) == before
    return runs


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_combination_predicts_what_the_plain_run_predicts(matrix, layout):
    _, results = matrix[layout]
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
    (values, _), (scheme, dtype) = matrix[layout], LAYOUTS[layout]
    assert values["next_token_id"] == ANSWER
    setup = cell_text(values["notebook"], "prelims-code")
    assert f"computing in {dtype}" in setup
    line = next(line for line in setup.splitlines() if line.startswith("quantized:"))
    matrices = 4 * 7 + 1  # the embedded model: 4 layers of 7, and the output matrix
    numbers = rf"{matrices} matrices: [\d.,]+ MB → [\d.,]+ MB"
    assert re.search(rf"{quantization.SCHEMES[scheme]}, {numbers}", line), line
    assert "fused weight-only kernels" in line, line


# In the notebook's kernel, after its last cell (sent there as source:
# testbeds/notebook_kernel.py).


@in_kernel
def settings_matrix(
    nb: KernelGlobals, combinations: list[dict], notebook_path: str, path: str
) -> None:
    """The lesson's main path again under each combination of the settings that change how
    weights are read (LLAMA3_DTYPE, LLAMA3_QUANTIZE, LLAMA3_ONE_ROW): for each, the setup
    cell's decisions are made anew (`run_settings.decide`, `settings.weight_reader`) and the
    notebook's own cells from `show-def` to `forward-def` run again in this kernel (the
    tokenizer's cells aside: they read no weight). Saves each run's next token, by the cells
    and by `forward`, and the setup's lines about it."""
    import os
    from unittest import mock

    import matplotlib.pyplot as plt
    import nbformat

    from plumbing import run_settings

    cells = nbformat.read(notebook_path, as_version=4).cells
    ids = [cell.get("id") for cell in cells]
    lesson = cells[ids.index("show-def") : ids.index("forward-def") + 1]
    sources = [
        cell.source
        for cell in lesson
        if cell.cell_type == "code" and not cell.get("id", "").startswith("bpe")
    ]
    results = []
    for combination in combinations:
        os.environ.update(combination)
        settings = run_settings.decide(
            nb["checkpoint_dir"], nb["config"], nb["tokenizer"], nb["model"]
        )
        nb.update(settings=settings, device=settings.device, compute_dtype=settings.dtype)
        nb["weight"] = settings.weight_reader(nb["model"])
        # the figures are the plain run's: here each is closed unrendered, not drawn again
        with mock.patch.object(plt, "show", lambda *_, **__: plt.close("all")):
            for source in sources:
                exec(compile(source, "lesson", "exec"), nb.namespace)
        forward_token = int(nb["forward"](nb["prompt_tokens"]).argmax())
        results.append(
            {
                **combination,
                "cells": nb["next_token_id"],
                "forward": forward_token,
                "dtype": str(settings.dtype).removeprefix("torch."),
                "quantized": settings.quantization_note,
                "one_row": settings.one_row_note,
            }
        )
    with open(path, "w") as file:
        json.dump(results, file)
