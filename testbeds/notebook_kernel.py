"""Execute the notebook unchanged, then call functions in its kernel on its own objects: the one
way tests and benchmarks read what the notebook computed.

A call is `MODULE.FUNCTION(nb, *arguments, path)` in a cell appended after the notebook's last
one, where `nb` is the kernel's globals as its contract lets them be read
(testbeds/notebook_contract.py) and `path` a file for the function's results. The tests' module
is tests/support/kernel_readers.py, the benchmarks' benchmarks/kernel_figures.py.

    python -m testbeds.notebook_kernel SETTINGS MODULE FUNCTION ARGUMENTS

SETTINGS is a JSON object of LLAMA3_* variables, ARGUMENTS a JSON list; the function's figures
(a JSON file) print as one JSON line. A benchmark that measures the memory of a whole notebook
run measures this process and its kernel, so this module imports no more than `make run`'s
driver does: nbformat and plumbing.run_notebook, about 24 MB of anonymous memory, and not torch
(about 0.27 GB).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import nbformat

from plumbing import run_notebook
from plumbing.run_notebook import NOTEBOOK

# tools/check_mutations.py points this at deliberately broken copies to prove the tests can fail.
NOTEBOOK_UNDER_TEST = Path(os.environ.get("NOTEBOOK_UNDER_TEST", NOTEBOOK))

# The settings most tests run the notebook with: float32 on the CPU, as the references compute.
FLOAT32_CPU = {"LLAMA3_DTYPE": "float32", "LLAMA3_DEVICE": "cpu"}
# For runs that only read the lesson's tensors: the demos (more prompts, generation, the logit
# lens, learning) are skipped. On a ~100M-parameter random test checkpoint they cost about 40 s
# of a 50 s run; each test checkpoint shape still runs them once, in test_parity.
TENSORS_ONLY = {**FLOAT32_CPU, "LLAMA3_EXTRAS": "0"}

# The canonical prompt as Llama 3's tokenizer encodes it, <|begin_of_text|> first (Meta's ids).
# fmt: off
CANONICAL_TOKENS = [
    128000, 1820, 4320, 311, 279, 17139, 3488, 315, 2324, 11, 279, 15861, 11, 323, 4395, 374, 220,
]
# fmt: on


def calls_cell(module: str, calls: list[tuple], workdir: Path) -> str:
    """The cell that calls MODULE.NAME(nb, *arguments, workdir / NAME) for each (NAME, *arguments)
    of `calls`."""
    package, _, name = module.rpartition(".")
    lines = [
        "from testbeds.notebook_contract import NotebookGlobals",
        f"from {package} import {name}" if package else f"import {name}",
    ]
    for function, *arguments in calls:
        arguments = [*arguments, str(workdir / function)]
        listed = ", ".join(["NotebookGlobals(globals())", *map(repr, arguments)])
        lines.append(f"{name}.{function}({listed})")
    return "\n".join(lines)


def run_and_call(
    settings: dict[str, str], module: str, calls: list[tuple], workdir: Path, timeout: int = 1200
):
    """Execute the notebook with these LLAMA3_* settings, then each call of `calls` in its kernel
    (see `calls_cell`); returns the executed notebook. Each function writes its results to
    workdir / its name."""
    notebook = nbformat.read(NOTEBOOK_UNDER_TEST, as_version=4)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    notebook.cells.append(nbformat.v4.new_code_cell(calls_cell(module, calls, workdir)))
    run_notebook.execute(notebook, settings, timeout=timeout)
    return notebook


def figures(
    settings: dict[str, str], module: str, function: str, *arguments, timeout: int = 7200
) -> dict:
    """Execute the notebook, then MODULE.FUNCTION in its kernel; the figures it wrote as JSON."""
    with tempfile.TemporaryDirectory() as scratch:
        run_and_call(settings, module, [(function, *arguments)], Path(scratch), timeout)
        return json.loads((Path(scratch) / function).read_text())


def main() -> int:
    settings, module, function, arguments = sys.argv[1:5]
    print(json.dumps(figures(json.loads(settings), module, function, *json.loads(arguments))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
