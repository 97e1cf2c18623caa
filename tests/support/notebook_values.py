"""Run llama3-from-scratch.ipynb unchanged and read back what its own cells computed.

Tests never re-implement the model. They execute the notebook in a fresh kernel
(testbeds/notebook_kernel.py, which benchmarks use too), then, in the same kernel, call
functions of tests/support/kernel_readers.py on the notebook's globals: `read_back` saves the
lesson's tensors, and others run the notebook's own `generate`, `bpe_encode`,
`token_losses` … and save what the tests compare. A kernel is the costly part of a test,
so one run serves every test of its configuration (see tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import nbformat
import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from nbclient.exceptions import CellExecutionError

from plumbing import REPO_DIR, run_notebook
from plumbing.run_notebook import NOTEBOOK
from testbeds import notebook_kernel

# The notebook runs' settings and facts, named where the tests read them (testbeds'):
from testbeds.notebook_kernel import CANONICAL_TOKENS as CANONICAL_TOKENS
from testbeds.notebook_kernel import FLOAT32_CPU as FLOAT32_CPU
from testbeds.notebook_kernel import NOTEBOOK_UNDER_TEST as NOTEBOOK_UNDER_TEST
from testbeds.notebook_kernel import TENSORS_ONLY as TENSORS_ONLY
from tests.multilingual_sentences import SENTENCES

# Meta's tokenizer against ours on these strings (made by generators/make_tokenizer_strings.py).
TOKENIZER_PARITY_STRINGS = REPO_DIR / "tests" / "tokenizer_parity_strings.json"

# The notebook's from-scratch BPE scans every pair at every merge, so its time grows with
# the square of a piece's length: the twenty runs of 1,000-3,500 characters in the strings
# file cost 25 of its 30 s. The kernel encodes each string cut to this many characters (the
# same kinds of text, runs included); tests/test_tokenizer_parity.py checks the whole
# strings with the tokenizer the notebook encodes with.
BPE_STRING_LIMIT = 400


def bpe_parity_strings() -> list[str]:
    """The parity strings as the notebook's own BPE encodes them in the shared kernel, then the
    sentences of tests/multilingual_sentences.py."""
    strings = json.loads(TOKENIZER_PARITY_STRINGS.read_text(encoding="utf-8"))
    sentences = [sentence for group in SENTENCES.values() for sentence in group]
    return [text[:BPE_STRING_LIMIT] for text in strings] + sentences


def run_and_read(
    workdir: Path, settings: dict[str, str], timeout: int = 1200, also: tuple = ()
) -> dict:
    """Execute the notebook with these LLAMA3_* settings; return its tensors and the executed
    notebook.

    `also`: more kernel_readers functions to call after `read_back`, each as (name,
    *arguments); each writes to workdir / name, returned under values["files"][name].
    """
    workdir = Path(workdir)
    calls = [("read_back",), *also]
    notebook = notebook_kernel.run_and_call(
        settings, "tests.support.kernel_readers", calls, workdir, timeout
    )
    values = torch.load(workdir / "read_back", weights_only=True)
    values["notebook"] = notebook
    values["files"] = {name: workdir / name for name, *_ in also}
    return values


def cell_text(notebook, cell_id: str) -> str:
    """What a cell of an executed notebook printed."""
    cell = next(cell for cell in notebook.cells if cell.get("id") == cell_id)
    return "".join(
        output.get("text", "") for output in cell.outputs if output.get("output_type") == "stream"
    )


def setup_cell_failure(settings: dict[str, str]):
    """Run All with these settings; the first cell with output, where it stopped."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.raises(CellExecutionError):
        run_notebook.execute(notebook, settings, timeout=300)  # Run All stops at the failing cell
    return next(cell for cell in notebook.cells if cell.cell_type == "code" and cell.outputs)


def setup_source() -> str:
    """The notebook's first code cells, up to the setup cell (`prelims-code`), as one source:
    the package check, the imports and the setup, what a reader runs before any lesson."""
    sources = []
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type == "code":
            sources.append(cell.source)
            if cell.get("id") == "prelims-code":
                return "\n".join(sources)
    raise AssertionError("the notebook has no setup cell, `prelims-code`")


def setup_cell_in_process(settings: dict[str, str]) -> str:
    """Run the notebook's setup cell in an IPython shell in this process with these LLAMA3_*
    settings, as Jupyter would; it must fail. Returns everything it printed.

    No kernel to start, so a bad input costs a fraction of a second; `setup_cell_failure`
    checks once, in a real kernel, that Run All stops there with that line as the only output.
    """
    setup = setup_source()
    shell = InteractiveShell.instance()
    printed = io.StringIO()
    saved = {name: value for name, value in os.environ.items() if name.startswith("LLAMA3_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(settings)
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            result = shell.run_cell(setup)
    finally:
        for name in [name for name in os.environ if name.startswith("LLAMA3_")]:
            del os.environ[name]
        os.environ.update(saved)
    assert not result.success, "the setup cell did not fail"
    return printed.getvalue()
